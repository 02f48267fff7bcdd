// The controller's metrics: faults counted by kind and outcome as a real controller answers a scripted
// agent, `vdisk stats` in-process, and the Prometheus endpoint scraped over loopback, both in-process and
// from a real `vdisk controller start --metrics` process.
import t from 'tap';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { FAULT_READ, FAULT_WRITE } from '../../src/io/translator.js';
import { STATE_ZERO } from '../../src/table/mapping-table.js';
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

  const port = await controller.startMetrics('127.0.0.1', 0);
  const body = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  t.match(body, /^# HELP vdisk_faults_total /m);
  t.match(body, /^vdisk_faults_total\{kind="write"\} 4$/m);
  t.match(body, /^vdisk_fault_errors_total\{kind="write"\} 1$/m);
  t.match(body, new RegExp(`^vdisk_container_used_bytes\\{container="c1"\\} ${3 * SEG}$`, 'm'));
  t.match(body, /^vdisk_agent_lease_seconds\{host="hx"\} 5$/m);
  t.equal((await fetch(`http://127.0.0.1:${port}/other`)).status, 404, 'nothing else is served');
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
