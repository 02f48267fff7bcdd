// Restart without loss, on the real kernel: kill -9 of the agent during fio verify (the new agent recovers
// the quiesced device, fio sees no error and its verify passes); kill -9 of the controller during writes
// (mapped segments keep being served, a write that needs an allocation waits until the controller is back);
// and the lease: an agent cut off from the controller for longer than its lease suspends I/O until reloaded.
import t from 'tap';
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import { Cluster } from './cluster.js';
import { readDirect, readDirectAsync, ublkAvailable, writeDirect, writeDirectAsync } from './helpers.js';

const missing = ublkAvailable();
if (missing) t.fail(`needs a real ublk kernel: ${missing}`);
const MB = 1 << 20;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function tracked<T>(p: Promise<T>): { done: () => boolean; p: Promise<T> } {
  let finished = false;
  void p.then(() => { finished = true; }, () => { finished = true; });
  return { done: () => finished, p };
}

t.test('kill -9 of the agent during fio verify', async (t) => {
  const c = Cluster.start('vd-agent-kill');
  t.teardown(() => c.stop());
  c.container('c1', '512M');
  c.ok('create', 'd1', '--size', '256M');
  const dev = c.attach('d1', 'h1', '--queues', '2');
  const fio = spawn('fio', ['--name=v', `--filename=${dev}`, '--rw=randwrite', '--bs=4k', '--size=64M', '--iodepth=16',
    '--ioengine=libaio', '--direct=1', '--verify=crc32c', '--do_verify=1', '--verify_fatal=1', '--rate_iops=1500',
    '--randrepeat=0'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  fio.stdout.on('data', (d) => { out += d; });
  fio.stderr.on('data', (d) => { out += d; });
  const fioDone = tracked(new Promise<number | null>((r) => fio.once('exit', (code) => r(code))));
  await sleep(4000);
  t.notOk(fioDone.done(), 'fio is still writing when the agent is killed');
  const pid = c.agentPid();
  process.kill(pid, 'SIGKILL');
  await sleep(1500);
  t.notOk(fioDone.done(), 'fio waits (the device is quiesced, not failed)');
  const r = await c.vdiskAsync('agent', 'start', '--host-id', 'h1');
  t.equal(r.status, 0, `a new agent starts: ${r.out}${r.err}`);
  t.not(c.agentPid(), pid, 'it is a new process');
  t.equal(await fioDone.p, 0, `fio finished without error:\n${out.split('\n').filter((l) => /err|verify/.test(l)).join('\n')}`);
  t.match(out, /err= 0/, 'fio reports err=0');
  t.equal(c.attach.length >= 0 && c.json<Array<{ disks: string[] }>>('agent', 'ls')[0].disks[0], 'd1', 'the new agent holds d1');
  t.ok(readDirect(dev, 0, 4096).length === 4096, `${dev} is the same device, served again`);
});

t.test('kill -9 of the controller during writes, and the lease', async (t) => {
  const c = Cluster.start('vd-ctl-kill');
  t.teardown(() => c.stop());
  c.container('c1', '256M');
  c.ok('create', 'd1', '--size', '64M');
  c.ok('agent', 'start', '--host-id', 'h1', '--lease', '4');
  const dev = c.attach('d1');
  const a = crypto.randomBytes(MB);
  writeDirect(dev, 0, a); // segment 0 allocated

  process.kill(c.controllerPid(), 'SIGKILL');
  const b = crypto.randomBytes(64 * 1024);
  await writeDirectAsync(dev, 256 * 1024, b);
  t.ok((await readDirectAsync(dev, 0, MB)).equals(Buffer.concat([a.subarray(0, 256 * 1024), b, a.subarray(256 * 1024 + b.length)])),
    'with the controller dead, the mapped segment is written and read as before');
  const fresh = crypto.randomBytes(64 * 1024);
  const pending = tracked(writeDirectAsync(dev, 10 * MB, fresh));
  await sleep(2000);
  t.notOk(pending.done(), 'a write to an unallocated segment waits for the controller');
  await sleep(3000); // past the 4 s lease
  const suspended = tracked(readDirectAsync(dev, 0, 4096));
  await sleep(2000);
  t.notOk(suspended.done(), 'past the lease, even a mapped read is suspended');
  const r = await c.vdiskAsync('controller', 'start');
  t.equal(r.status, 0, 'the controller restarts');
  await pending.p;
  t.pass('the waiting write completed after the restart');
  t.ok((await suspended.p).equals(a.subarray(0, 4096)), 'the suspended read completed with the right data');
  t.ok(readDirect(dev, 10 * MB, fresh.length).equals(fresh), 'the late write is there');
  t.equal(c.json<{ allocatedBytes: number }>('info', 'd1').allocatedBytes, 2 * MB, 'and its segment is recorded');
  const log = c.log('agent-h1.log');
  t.match(log, /lease of 4000 ms expired/, 'the agent logged the suspension');
});
