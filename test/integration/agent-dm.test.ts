// Device-mapper containers on the real kernel. The blocking flag through the controller: a state change is
// answered only after every I/O that started before it completed on every agent (a write held in a suspended
// container keeps the reply back); No-write holds new writes until cleared. And real container I/O errors
// (a dm error target) turn exactly the affected entries to Error; a dm-flakey container failing writes and
// a dm-delay one under fio verify: Error on exactly the failed segment, EIO to that writer only, the other
// disk undisturbed, the repaired container serving again.
import t from 'tap';
import { spawn, spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import { connect } from '../../src/protocol/client.js';
import { socketPath } from '../../src/controller/paths.js';
import { STATE_NO_WRITE } from '../../src/table/mapping-table.js';
import { Cluster } from './cluster.js';
import { fioVerify, inflight, makeFile, readDirect, readDirectAsync, run, ublkAvailable, waitFor, writeDirect } from './helpers.js';

const missing = ublkAvailable();
if (missing) t.fail(`needs a real ublk kernel: ${missing}`);
const MB = 1 << 20;
interface Info { entriesByState: Record<string, number> }
const dm = (args: string[]) => spawnSync('dmsetup', args, { encoding: 'utf8', env: { ...process.env, DM_DISABLE_UDEV: '1' } });

function ddWrite(dev: string, offset: number, data: Buffer): { done: () => boolean; code: Promise<number | null> } {
  const w = spawn('dd', [`of=${dev}`, 'bs=64K', `seek=${offset / 65536}`, 'count=1', 'oflag=direct', 'status=none'], { stdio: ['pipe', 'ignore', 'pipe'] });
  w.stdin.end(data);
  let finished = false;
  const code = new Promise<number | null>((r) => w.once('exit', (c) => { finished = true; r(c); }));
  return { done: () => finished, code };
}

type Test = Pick<typeof t, 'equal' | 'teardown'>;

/**
 * A new cluster whose container `dm` is a dm-linear device over a loop file of `size` bytes, so that a test can
 * suspend it; the teardown resumes it before the cluster stops. Returns the cluster and the dm device's name.
 */
async function dmCluster(t: Test, tag: string, size: number): Promise<{ c: Cluster; name: string }> {
  const file = makeFile(tag, size);
  const loop = run('losetup', ['-f', '--show', file]).trim();
  const name = `vdisk-${tag}-${process.pid}`;
  t.equal(dm(['create', name, '--table', `0 ${size / 512} linear ${loop} 0`]).status, 0, 'dm container created');
  const c = await Cluster.start(`vd-${tag}`);
  t.teardown(async () => {
    dm(['resume', name]);
    await c.stop();
    dm(['remove', name]);
    run('losetup', ['-d', loop]);
  });
  await c.ok('container', 'add', 'dm', '--path', `/dev/mapper/${name}`);
  return { c, name };
}

t.test('a blocking state change waits for in-flight I/O on the agent', async (t) => {
  const { c, name } = await dmCluster(t, 'blocking', 64 * MB);
  await c.ok('create', 'd1', '--size', '16M', '--thick');
  const dev = await c.attach('d1');
  const { conn } = await connect(socketPath(c.dir), { role: 'cli' });
  t.teardown(() => conn.close());

  t.equal(dm(['suspend', name]).status, 0, 'container suspended');
  const data = crypto.randomBytes(64 * 1024);
  const w = ddWrite(dev, 3 * MB, data);
  await waitFor('the write to be in flight on the device', () => inflight(dev).writes >= 1 || w.done());
  t.notOk(w.done(), 'a write is stalled in the container (in flight on the device)');

  const order: string[] = [];
  const change = conn.request('disk.states', { name: 'd1', first: 0, count: 16, bits: STATE_NO_WRITE, set: true }, { timeoutMs: 120_000 })
    .then(() => { order.push('reply'); });
  // Proof that the reply is held by the stalled write: the change is recorded, a later request on the same
  // connection is answered, and the write is still in flight. (A read would stall in the suspended container.)
  await waitFor('No-write to be recorded', async () => (await c.json<Info>('info', 'd1')).entriesByState.noWrite === 16);
  t.ok((await conn.request('controller.status')).result, 'the controller answers a later request on the same connection');
  t.equal(inflight(dev).writes, 1, 'the write from before the change is still in flight');
  t.same(order, [], 'the controller has not answered the blocking change');
  order.push('resume');
  t.equal(dm(['resume', name]).status, 0, 'container resumed');
  await change;
  t.same(order, ['resume', 'reply'], 'the answer came only after the stalled write could complete');
  t.equal(await w.code, 0, 'the stalled write completed');
  t.ok(readDirect(dev, 3 * MB, data.length).equals(data), 'with its data');
  t.equal((await c.json<Info>('info', 'd1')).entriesByState.noWrite, 16, 'No-write is recorded in the store');

  const held = ddWrite(dev, 5 * MB, crypto.randomBytes(64 * 1024));
  await waitFor('the write to No-write to reach the device', () => inflight(dev).writes >= 1 || held.done());
  t.ok((await readDirectAsync(dev, 3 * MB, data.length)).equals(data), 'reads are served after it');
  t.notOk(held.done(), 'while a write to a No-write segment is held');
  t.equal(inflight(dev).writes, 1, 'in flight on the device');
  await conn.request('disk.states', { name: 'd1', first: 0, count: 16, bits: STATE_NO_WRITE, set: false });
  t.equal(await held.code, 0, 'clearing No-write lets the held write complete');

  const bad = await conn.request('disk.states', { name: 'd1', first: 10, count: 10, bits: STATE_NO_WRITE, set: true }).catch((e: Error & { code: string }) => e);
  t.match(bad, { code: 'ERANGE' }, 'an out-of-range change is refused');
  t.equal((await conn.request('controller.status')).result !== undefined, true, 'and the controller is still healthy');
});

/** The block device of the ublk char device that process `pid` holds open (the one it is starting), if any. */
function deviceOpenedBy(pid: number): string | undefined {
  for (const fd of fs.readdirSync(`/proc/${pid}/fd`)) {
    const m = /^\/dev\/ublkc(\d+)$/.exec((() => { try { return fs.readlinkSync(`/proc/${pid}/fd/${fd}`); } catch { return ''; } })());
    if (m) return `/dev/ublkb${m[1]}`;
  }
  return undefined;
}

t.test('a detach while the attach\'s START_DEV waits (its partition scan reads a suspended container) stops the device it brings', async (t) => {
  const { c, name } = await dmCluster(t, 'startdev', 32 * MB);
  await c.ok('create', 's1', '--size', '16M', '--thick'); // thick: the partition scan reads the container
  await c.ok('agent', 'start', '--host-id', 'h1');
  const agent = await c.agentPid();
  t.equal(dm(['suspend', name]).status, 0, 'container suspended');
  const attach = c.spawnVdisk(['attach', 's1', '--host-id', 'h1']);
  let dev = '';
  await waitFor('the new device\'s partition scan to be in flight', () => {
    dev = deviceOpenedBy(agent) ?? '';
    return (dev !== '' && fs.existsSync(`/sys/block/${dev.slice(5)}/inflight`) && inflight(dev).reads >= 1);
  });
  t.pass(`START_DEV of ${dev} waits on a read in the suspended container`);
  // Before the fix this detach stopped nothing (the agent had no device yet) and was answered at once; then
  // the attach recorded its device: the disk stayed attached, served by a device no detach had stopped.
  const { conn } = await connect(socketPath(c.dir), { role: 'cli' });
  t.teardown(() => conn.close());
  let answered = false;
  const detach = conn.request('disk.detach', { name: 's1', hostId: 'h1', force: false }, { timeoutMs: 120_000 })
    .finally(() => { answered = true; });
  await waitFor('the detach to be answered or to wait for the attach', () =>
    answered || /detach of s1 on h1 waits for its attach or recovery to end/.test(c.log('controller.log')));
  t.notOk(answered, 'the detach waits for the attach (the container still suspended)');
  t.equal(dm(['resume', name]).status, 0, 'container resumed');
  const [a] = await Promise.all([attach.done, detach]);
  t.equal(a.status, 0, `the attach completed ${a.err}`);
  t.pass('the detach completed');
  const ls = await c.json<Array<{ name: string; device: string | null }>>('ls');
  t.equal(ls.find((x) => x.name === 's1')?.device, null, 'the disk is detached');
  t.notOk(fs.existsSync(`/sys/block/${dev.slice(5)}`), `${dev} is gone`);
});

function ddRead(dev: string, offset: number): { status: number | null; err: string } {
  const r = spawnSync('dd', [`if=${dev}`, 'bs=4096', `skip=${offset / 4096}`, 'count=1', 'iflag=direct', 'status=none'], { encoding: 'utf8' });
  return { status: r.status, err: r.stderr };
}

t.test('an I/O error from the container turns the affected entry to Error', async (t) => {
  const file = makeFile('ioerror', 32 * MB);
  const loop = run('losetup', ['-f', '--show', file]).trim();
  const name = `vdisk-err-${process.pid}`;
  const half = (16 * MB) / 512;
  t.equal(dm(['create', name, '--table', `0 ${half} linear ${loop} 0\n${half} ${half} error`]).status, 0, 'dm container: 16 MiB good, 16 MiB failing');
  const c = await Cluster.start('vd-ioerr');
  t.teardown(async () => {
    await c.stop();
    dm(['remove', name]);
    run('losetup', ['-d', loop]);
  });
  await c.ok('container', 'add', 'dm', '--path', `/dev/mapper/${name}`);
  // A thick disk is zeroed before it is mapped: over failing storage that cannot be promised.
  // 31 MiB: the container's first MiB is its label's reserve.
  const refused = await c.vdisk('create', 'd0', '--size', '31M', '--thick');
  t.not(refused.status, 0, 'a thick create over the failing half fails');
  t.match(refused.err, /Input\/output error/);
  t.not((await c.vdisk('info', 'd0')).status, 0, 'and leaves no disk');
  // Created while the whole container works, then half of it fails under the disk.
  t.equal(dm(['reload', name, '--table', `0 ${2 * half} linear ${loop} 0`]).status, 0);
  t.equal(dm(['resume', name]).status, 0);
  await c.ok('create', 'd1', '--size', '31M', '--thick'); // segment i is container MiB i + 1 (after the label)
  t.equal(dm(['reload', name, '--table', `0 ${half} linear ${loop} 0\n${half} ${half} error`]).status, 0);
  t.equal(dm(['resume', name]).status, 0, 'the second half fails again');
  const dev = await c.attach('d1');
  t.equal(ddRead(dev, 3 * MB).status, 0, 'a segment on the good half reads');
  const bad = ddRead(dev, 20 * MB);
  t.match(bad.err, /Input\/output error/, 'a segment on the failing half gives EIO');
  const errors = async () => (await c.json<Info>('info', 'd1')).entriesByState.error;
  await c.until('the Error entry to be recorded', async () => (await errors()) === 1);
  t.equal(await errors(), 1, 'exactly the one entry the failed read touched is Error');

  // Repair the container: the recorded Error stays (the data there is unknown); other entries read again.
  t.equal(dm(['reload', name, '--table', `0 ${2 * half} linear ${loop} 0`]).status, 0, 'new table loaded');
  t.equal(dm(['resume', name]).status, 0, 'container repaired');
  t.match(ddRead(dev, 20 * MB + 8192).err, /Input\/output error/, 'the Error segment still fails, now without touching the container');
  t.equal(ddRead(dev, 22 * MB).status, 0, 'a segment on the repaired half that never failed reads');
  t.equal(ddRead(dev, 3 * MB).status, 0, 'and the good half still reads');
  t.equal(await errors(), 1, 'no other entry turned to Error');
});

t.test('container faults during writes: dm-flakey fails exactly its segments, dm-delay only slows another disk', async (t) => {
  const fileA = makeFile('flaky', 17 * MB); // 16 MiB for d1 after the label's 1 MiB
  const fileB = makeFile('delay', 32 * MB);
  const loopA = run('losetup', ['-f', '--show', fileA]).trim();
  const loopB = run('losetup', ['-f', '--show', fileB]).trim();
  const flaky = `vdisk-flaky-${process.pid}`;
  const slow = `vdisk-delay-${process.pid}`;
  const half = (8 * MB) / 512;
  const label = MB / 512;
  t.equal(dm(['create', flaky, '--table', `0 ${2 * half + label} linear ${loopA} 0`]).status, 0, 'container A: a linear dm device');
  t.equal(dm(['create', slow, '--table', `0 ${(32 * MB) / 512} delay ${loopB} 0 50`]).status, 0, 'container B: every I/O delayed 50 ms');
  const c = await Cluster.start('vd-faults');
  t.teardown(async () => {
    await c.stop();
    dm(['remove', flaky]);
    dm(['remove', slow]);
    run('losetup', ['-d', loopA]);
    run('losetup', ['-d', loopB]);
  });
  await c.ok('container', 'add', 'fa', '--path', `/dev/mapper/${flaky}`);
  await c.ok('container', 'add', 'dl', '--path', `/dev/mapper/${slow}`);
  await c.ok('create', 'd1', '--size', '16M', '--thick', '--container', 'fa'); // segment i is container MiB i + 1 (after the label)
  await c.ok('create', 'd2', '--size', '16M', '--container', 'dl');
  const dev1 = await c.attach('d1');
  const dev2 = await c.attach('d2', 'h1', '--queues', '2');
  const data = crypto.randomBytes(16 * MB);
  writeDirect(dev1, 0, data);
  const fio = fioVerify(dev2, '16M', ['--number_ios=60', '--rate_iops=30']);

  // The second half of d1 on A now fails every write (reads still pass): dm-flakey, always down, error_writes.
  t.equal(dm(['reload', flaky, '--table', `0 ${half + label} linear ${loopA} 0\n${half + label} ${half} flakey ${loopA} ${half + label} 0 3600 1 error_writes`]).status, 0);
  t.equal(dm(['resume', flaky]).status, 0, 'writes to the second half of A fail from now on');
  const bad = spawnSync('dd', [`of=${dev1}`, 'bs=64K', `seek=${(10 * MB) / 65536}`, 'count=1', 'oflag=direct', 'status=none'],
    { input: crypto.randomBytes(65536), encoding: 'utf8' });
  t.not(bad.status, 0, 'a write to segment 10 (on the failing half) fails');
  t.match(bad.stderr, /Input\/output error/, 'with EIO');
  const good = crypto.randomBytes(MB);
  writeDirect(dev1, 3 * MB, good);
  t.ok(readDirect(dev1, 3 * MB, MB).equals(good), 'a write to segment 3 (on the good half) succeeds and reads back');
  t.ok(readDirect(dev1, 13 * MB, MB).equals(data.subarray(13 * MB, 14 * MB)), 'segment 13 (failing half, never written since) still reads its data');
  const errors = async (d: string) => (await c.json<Info>('info', d)).entriesByState.error;
  await c.until('the Error entry to be recorded', async () => (await errors('d1')) === 1);
  t.equal(await errors('d1'), 1, 'exactly the entry of the failed write is Error');
  t.match(ddRead(dev1, 10 * MB + 8192).err, /Input\/output error/, 'and reads of it fail now too: its data is unknown');

  t.equal(await fio.done, 0, `d2 on the delayed container: fio verify passed meanwhile\n${fio.out()}`);
  t.equal(await errors('d2'), 0, 'and no entry of d2 turned Error');

  // Repair A: everything but the Error entry serves again, writes included.
  t.equal(dm(['reload', flaky, '--table', `0 ${2 * half + label} linear ${loopA} 0`]).status, 0);
  t.equal(dm(['resume', flaky]).status, 0, 'container A repaired');
  const later = crypto.randomBytes(MB);
  writeDirect(dev1, 12 * MB, later);
  t.ok(readDirect(dev1, 12 * MB, MB).equals(later), 'a segment on the repaired half takes writes again');
  t.match(ddRead(dev1, 10 * MB).err, /Input\/output error/, 'the Error entry stays Error');
  t.equal(await errors('d1'), 1, 'and is the only one');
  t.equal(...(await c.check()));
});
