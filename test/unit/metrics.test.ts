// The controller's metrics: faults counted by kind and outcome as a real controller answers a scripted
// agent, `vdisk stats` in-process, and the Prometheus endpoint scraped over loopback, both in-process and
// from a real `vdisk controller start --metrics` process.
import t from 'tap';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { FAULT_READ, FAULT_WRITE } from '../../src/protocol/fault-ops.js';
import { STATE_ZERO } from '../../src/table/mapping-table.js';
import type { StatsSnapshot } from '../../src/controller/metrics.js';
import { socketPath } from '../../src/controller/paths.js';
import { VdiskError } from '../../src/errors.js';
import { connect } from '../../src/protocol/client.js';
import { runCli } from '../support/cli.js';
import { scriptedController } from '../support/scripted-agent.js';

const SEG = 64 * 1024;
const { dir, controller, scriptedAgent, ask } = await scriptedController(t, 'vdisk-metrics-');
const img = path.join(dir, 'c1.img');
fs.writeFileSync(img, '');
fs.truncateSync(img, 4 << 20);
await ask('container.add', { name: 'c1', path: img, size: 4 << 20 });
const hx = await scriptedAgent('hx', 5);
const d = await ask<{ id: number }>('disk.create', { name: 'm', size: 4 * SEG, segmentSize: SEG });
/** The in-process controller's /metrics port, served from the first test on. */
let port = 0;
const fault = (op: number, segment: number) => hx.conn.request('fault', { diskId: d.id, op, segment, states: STATE_ZERO, offset: 0, length: 4096 });

/** A free loopback port (listen on 0, close, reuse). */
async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

t.test('faults by kind and outcome, in vdisk stats and on /metrics', async (t) => {
  for (let s = 0; s < 3; s++) await fault(FAULT_WRITE, s);
  await fault(FAULT_READ, 3);
  await t.rejects(fault(FAULT_WRITE, 99), 'an out-of-range segment is refused');
  const stats = JSON.parse((await runCli(['stats', '--json'], dir)).out) as { faults: Record<string, { count: number; errors: number }>; containers: unknown[]; agents: Array<{ hostId: string }> };
  t.match(stats.faults, { write: { count: 4, errors: 1 }, read: { count: 1, errors: 0 } }, 'counted by kind; the refused one as an error');
  t.match(stats.containers, [{ name: 'c1', usedBytes: 3 * SEG }]);
  t.match(stats.agents, [{ hostId: 'hx' }]);
  const text = await runCli(['stats'], dir);
  t.equal(text.status, 0);
  t.match(text.out, /write\s+4\s+1/);

  port = await controller.startMetrics('127.0.0.1', 0);
  const body = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  t.match(body, /^# HELP vdisk_faults_total /m);
  t.match(body, /^vdisk_faults_total\{kind="write"\} 4$/m);
  t.match(body, /^vdisk_fault_errors_total\{kind="write"\} 1$/m);
  t.match(body, new RegExp(`^vdisk_container_used_bytes\\{container="c1"\\} ${3 * SEG}$`, 'm'));
  t.match(body, /^vdisk_agent_lease_seconds\{host="hx"\} 5$/m);
  t.equal((await fetch(`http://127.0.0.1:${port}/other`)).status, 404, 'nothing else is served');
});

t.test('per disk: allocation and Error segments from the table, I/O counts from each agent serving it', async (t) => {
  // A second agent that serves m and reports counters; hx (scripted) does not answer agent.status at all.
  const { conn: hy } = await connect(socketPath(dir), { role: 'agent', hostId: 'hy' });
  t.teardown(() => hy.close());
  const io = { reads: 10, readBytes: 40960, writes: 3, writeBytes: 3 * SEG, discards: 1, discardBytes: SEG, flushes: 2, errors: 1, faults: 4 };
  const delays = { parked: 2, cancelled: 5, expired: 1 };
  const grants = { held: 30, target: 64, claims: 34, unconfirmed: 2, requests: 3, empty: 0 };
  hy.onRequest(async (op) => {
    if (op === 'agent.status') return { suspended: false, disks: [{ diskId: d.id, name: 'm', device: '/dev/ublkb7', io, delays, grants }] };
    if (op === 'containers.set') return {};
    throw new VdiskError(`unexpected ${op}`, { code: 'EUNKNOWNOP' });
  });
  await hy.request('agent.register', { pid: process.pid, leaseMs: 4000, disks: [] });
  await hx.conn.request('disk.ioerror', { diskId: d.id, first: 1, count: 1 });

  const s = JSON.parse((await runCli(['stats', '--json'], dir)).out) as StatsSnapshot;
  t.match(s.agents.find((a) => a.hostId === 'hx'), { unanswered: /unknown operation agent.status/ }, 'an agent that does not answer is named, not waited for');
  t.match(s.agents.find((a) => a.hostId === 'hy'), { suspended: false });
  const m = s.diskStats.find((x) => x.name === 'm');
  t.match(m, { sizeBytes: 4 * SEG, allocatedBytes: 3 * SEG, errorSegments: 1 }, 'three mapped segments, one of them now Error');
  t.same(m?.hosts, [{ hostId: 'hy', device: '/dev/ublkb7', io, delays, grants }], 'and the counters of the one host serving it, with its delayed faults and grants');
  const text = await runCli(['stats'], dir);
  t.match(text.out, /^m\s+256K\s+192K\s+1\s+hy\s+\/dev\/ublkb7\s+10\s+40K\s+3\s+192K\s+2\s+1\s+2$/m, 'one row per disk and host');
  t.match(text.out, /^hx .*not answering/m);

  await t.rejects(controller.startMetrics('127.0.0.1', 0), { code: 'EEXIST' }, 'one endpoint per controller');
  const body = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  t.match(body, /^vdisk_disk_reads_total\{disk="m",host="hy"\} 10$/m);
  t.match(body, new RegExp(`^vdisk_disk_written_bytes_total\\{disk="m",host="hy"\\} ${3 * SEG}$`, 'm'));
  t.match(body, /^vdisk_disk_io_errors_total\{disk="m",host="hy"\} 1$/m);
  t.match(body, /^vdisk_disk_delayed_faults\{disk="m",host="hy"\} 2$/m);
  t.match(body, /^vdisk_disk_delays_ended_total\{disk="m",host="hy",how="cancelled"\} 5$/m);
  t.match(body, /^vdisk_disk_delays_ended_total\{disk="m",host="hy",how="expired"\} 1$/m);
  t.match(body, /^vdisk_disk_error_segments\{disk="m"\} 1$/m);
  t.match(body, new RegExp(`^vdisk_disk_allocated_bytes\\{disk="m"\\} ${3 * SEG}$`, 'm'));
  t.match(body, /^vdisk_agent_unanswered\{host="hx"\} 1$/m);
  t.match(body, /^vdisk_agent_suspended\{host="hy"\} 0$/m);

  const watch = await runCli(['stats', '--watch', '--interval', '1', '--count', '2', '--json'], dir);
  t.equal(watch.status, 0, watch.err);
  const lines = watch.out.trim().split('\n').map((l) => JSON.parse(l) as StatsSnapshot);
  t.equal(lines.length, 2, '--watch --count 2: two reports');
  t.ok(lines[1].uptimeS >= lines[0].uptimeS + 1, 'an interval apart');
  t.match((await runCli(['stats', '--watch', '--interval', '0'], dir)).err, /--interval must be a whole number from 1/);
});

t.test('a real controller process serves --metrics; a bad address is a usage error', async (t) => {
  const data = path.join(dir, 'proc');
  const port = await freePort();
  t.teardown(() => runCli(['controller', 'stop'], data));
  t.equal((await runCli(['controller', 'start', '--metrics', `127.0.0.1:${port}`], data)).status, 0);
  const body = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  t.match(body, /^vdisk_disks 0$/m, 'scraped from the daemon');
  const bad = await runCli(['controller', 'start', '--metrics', 'nowhere'], path.join(dir, 'bad'));
  t.equal(bad.status, 1);
  t.match(bad.err, /--metrics must be HOST:PORT/);
});
