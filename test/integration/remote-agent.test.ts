// An agent of "another host" over the controller's TLS listener, on the real kernel (issue 13 item 3): the
// controller on 127.0.0.1:PORT with --listen, `vdisk host add h2`, and `vdisk agent start --controller
// --credential` with its own data dir (nothing of the controller's host), then `vdisk attach --host-id h2`
// prints h2's /dev/ublkbN: first writes fault over TLS, fio verifies, bytes read back. kill -9 of that agent
// and a restart with the same credential recover the same device; `host rm` disconnects the agent, which
// exits and leaves the device quiesced; a new credential's agent recovers it with the data intact.
import t from 'tap';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { socketPath } from '../../src/controller/paths.js';
import type { StatsSnapshot } from '../../src/controller/metrics.js';
import { connect } from '../../src/protocol/client.js';
import { STATE_NO_WRITE } from '../../src/table/mapping-table.js';
import { UblkControlDevice } from '../../src/ublk/control.js';
import { runCli } from '../support/cli.js';
import { Cluster } from './cluster.js';
import { alive, readDirect, run, tracked, ublkAvailable, waitFor, writeDirect, writeDirectAsync } from './helpers.js';

const missing = ublkAvailable();
if (missing) t.fail(`needs a real ublk kernel: ${missing}`);
const MB = 1 << 20;
const UBLK_S_DEV_QUIESCED = 2;

async function devState(dev: string): Promise<number> {
  const control = UblkControlDevice.open();
  try {
    return (await control.getDevInfo(Number(dev.replace('/dev/ublkb', '')))).state;
  } finally {
    control.close();
  }
}

t.test('a remote agent over TLS serves a disk attached with --host-id, and survives kill -9 and revocation', async (t) => {
  const c = new Cluster('vd-remote');
  t.teardown(() => c.stop());
  await c.ok('controller', 'start', '--listen', '127.0.0.1:0');
  const { listen } = await c.json<{ listen: { host: string; port: number } }>('controller', 'status');
  const addr = `127.0.0.1:${listen.port}`;
  const other = fs.mkdtempSync(path.join(c.dir, 'host-h2-')); // h2's data dir: only its agent log lives there
  const cred = path.join(other, 'h2.pem');
  await c.ok('host', 'add', 'h2', '--out', cred);
  await c.container('c1', '512M');
  await c.ok('create', 'd1', '--size', '128M');

  const refused = await c.vdisk('attach', 'd1', '--host-id', 'h2');
  t.equal(refused.status, 2, 'attach on h2 before its agent connects fails');
  t.match(refused.err, /the agent of remote host h2 is not connected/);
  t.same(await c.json('agent', 'ls'), [], 'and no local agent was started for h2');

  // Run with h2's data dir, as on that host (Cluster.ok would add the controller's).
  const startRemote = () => runCli(['agent', 'start', '--controller', addr, '--credential', cred], other);
  const remote = async (): Promise<string> => {
    const r = await startRemote();
    if (r.status !== 0) throw new Error(`remote agent start: ${r.err}`);
    return r.out;
  };
  t.match(await remote(), /^vdisk agent h2 started \(pid \d+, controller 127\.0\.0\.1:\d+/);
  t.match(await c.json('host', 'ls'), [{ hostId: 'h2', connected: true, revokedAt: null }]);
  const dev = await c.attach('d1', 'h2');
  t.match(dev, /^\/dev\/ublkb\d+$/, `attach --host-id h2 printed h2's device (${dev})`);
  t.equal(fs.readlinkSync('/dev/vdisk/d1'), dev, 'the remote agent keeps /dev/vdisk/d1');

  const a = crypto.randomBytes(4 * MB);
  writeDirect(dev, 3 * MB, a);
  t.ok(readDirect(dev, 3 * MB, 4 * MB).equals(a), 'bytes written through the TLS-served device read back');
  t.ok(readDirect(dev, 64 * MB, MB).equals(Buffer.alloc(MB)), 'unwritten segments read zeros');
  await c.allocated('d1', 4 * MB);
  t.match(await c.json('info', 'd1'), { allocatedBytes: 4 * MB }, 'the first writes faulted over TLS and allocated 4 segments');
  run('fio', ['--name=v', `--filename=${dev}`, '--rw=randwrite', '--bs=4k', '--offset=16M', '--size=16M', '--iodepth=16',
    '--ioengine=libaio', '--direct=1', '--verify=crc32c', '--do_verify=1', '--verify_fatal=1', '--randrepeat=0']);
  t.pass('fio verify passed on the remote agent\'s device');

  // Delay and cancel on the remote host (issue 13 item 6): a write to a segment the operator holds parks on the
  // controller's 60 s delay, and the hold's end cancels the delay over TLS at once: the write is then served.
  const cli = (await connect(socketPath(c.dir), { role: 'cli' })).conn;
  t.teardown(() => cli.close());
  const hold = (set: boolean) => cli.request('disk.states', { name: 'd1', first: 40, count: 1, bits: STATE_NO_WRITE, set });
  const delays = async () => (await c.json<StatsSnapshot>('stats')).diskStats.find((d) => d.name === 'd1')?.hosts.find((h) => h.hostId === 'h2')?.delays;
  await hold(true);
  const W = crypto.randomBytes(MB);
  const held = tracked(writeDirectAsync(dev, 40 * MB, W));
  await waitFor('h2 to report the write parked on its delay', async () => (await delays())?.parked === 1);
  t.notOk(held.done(), 'the write to the held segment is pending, parked on h2');
  await hold(false);
  await held.p;
  t.same(await delays(), { parked: 0, cancelled: 1, expired: 0 }, 'its delay ended by the controller\'s cancel over TLS, not by running out');
  t.ok(readDirect(dev, 40 * MB, MB).equals(W), 'and the write, served after the hold, reads back');

  // kill -9 of the remote agent: the device is quiesced; the same credential's new agent recovers it.
  const pid = await c.agentPid('h2');
  process.kill(pid, 'SIGKILL');
  await waitFor('the kernel to quiesce the device', async () => (await devState(dev)) === UBLK_S_DEV_QUIESCED);
  await waitFor(`pid ${pid} to exit`, () => !alive(pid));
  await remote();
  t.not(await c.agentPid('h2'), pid, 'a new remote agent');
  t.ok(readDirect(dev, 3 * MB, 4 * MB).equals(a), `${dev} recovered over TLS with its data`);

  // Revocation: the live connection closes, the agent gives up; its device waits, quiesced.
  const pid2 = await c.agentPid('h2');
  t.match(await c.ok('host', 'rm', 'h2'), /credential revoked, 1 connection\(s\) closed/);
  await waitFor('the revoked agent to exit', () => !alive(pid2), 60_000).catch((err: Error) => {
    throw new Error(`${err.message}\n--- agent log:\n${fs.readFileSync(path.join(other, 'agent-h2.log'), 'utf8')}\n--- controller log:\n${c.log('controller.log')}`);
  });
  t.match(fs.readFileSync(path.join(other, 'agent-h2.log'), 'utf8'), /refused this host's credential, exiting: .*revoked/, 'it says why');
  t.same(await c.json('agent', 'ls'), [], 'no agent for h2');
  await waitFor('the kernel to quiesce the device', async () => (await devState(dev)) === UBLK_S_DEV_QUIESCED);
  const stale = await startRemote();
  t.equal(stale.status, 2, 'the revoked credential cannot start an agent');
  fs.rmSync(cred);
  await c.ok('host', 'add', 'h2', '--out', cred);
  await remote();
  t.ok(readDirect(dev, 3 * MB, 4 * MB).equals(a), 'a new credential\'s agent recovers the device, data intact');
  const b = crypto.randomBytes(MB);
  writeDirect(dev, 100 * MB, b);
  t.ok(readDirect(dev, 100 * MB, MB).equals(b), 'and serves new writes');
  t.equal((await c.check())[0], 0, 'vdisk check is clean');
  await c.ok('detach', 'd1');
  t.notOk(fs.existsSync(dev), 'detach removes h2\'s device');
});
