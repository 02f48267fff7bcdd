// Snapshots and clones on the real kernel, modelled on dm's snapshot tests: pattern-stomp on origin, snapshot
// and clone; a snapshot taken while a sequential writer runs is one instant (the writer's blocks form a
// prefix); a chain of 10 snapshots and clones, each reading its own data; `vdisk check` after each.
import t from 'tap';
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { Cluster } from './cluster.js';
import { readDirect, run, ublkAvailable, writeDirect } from './helpers.js';

const missing = ublkAvailable();
if (missing) t.fail(`needs a real ublk kernel: ${missing}`);
const MB = 1 << 20;

t.test('pattern stomp on origin, snapshot and clone', async (t) => {
  const c = await Cluster.start('vd-snap');
  t.teardown(() => c.stop());
  await c.container('c1', '256M');
  await c.ok('create', 'origin', '--size', '32M');
  const o = await c.attach('origin');
  const A = crypto.randomBytes(4 * MB);
  writeDirect(o, 2 * MB, A);
  await c.ok('snapshot', 'origin', 'snap');
  const B = crypto.randomBytes(MB);
  writeDirect(o, 3 * MB, B); // stomps segment 3 of the origin only
  const s = await c.attach('snap');
  t.ok(readDirect(s, 2 * MB, 4 * MB).equals(A), 'the snapshot still reads A everywhere');
  t.ok(readDirect(o, 3 * MB, MB).equals(B), 'the origin reads B where it wrote');
  t.ok(readDirect(o, 2 * MB, MB).equals(A.subarray(0, MB)), 'and A elsewhere');
  t.ok(readDirect(s, 20 * MB, MB).equals(Buffer.alloc(MB)), 'unwritten segments read zeros on the snapshot');
  const ro = spawnWrite(s, 0);
  t.not(await ro, 0, 'the snapshot device refuses writes');

  await c.ok('clone', 'snap', 'clone');
  const k = await c.attach('clone');
  const C = crypto.randomBytes(64 * 1024);
  writeDirect(k, 2 * MB + 128 * 1024, C); // partial write to a shared segment: copy-on-write
  const expect = Buffer.from(A.subarray(0, MB));
  C.copy(expect, 128 * 1024);
  t.ok(readDirect(k, 2 * MB, MB).equals(expect), 'the clone reads C over A in the segment it wrote');
  t.ok(readDirect(s, 2 * MB, MB).equals(A.subarray(0, MB)), 'the snapshot still reads A there');
  t.ok(readDirect(o, 2 * MB, MB).equals(A.subarray(0, MB)), 'and so does the origin');
  t.ok(readDirect(k, 3 * MB, MB).equals(A.subarray(MB, 2 * MB)), 'the clone is the snapshot, not the later origin');
  const ls = (await c.json<Array<{ name: string; readOnly: boolean }>>('ls'));
  t.same(ls.map((d) => [d.name, d.readOnly]), [['origin', false], ['snap', true], ['clone', false]], 'ls shows the three disks');
  t.equal(...(await c.check()));
});

function spawnWrite(dev: string, off: number): Promise<number | null> {
  const w = spawn('dd', [`of=${dev}`, 'bs=4096', `seek=${off / 4096}`, 'count=1', 'oflag=direct', 'status=none'], { stdio: ['pipe', 'ignore', 'ignore'] });
  w.stdin.end(Buffer.alloc(4096, 1));
  return new Promise((r) => w.once('exit', r));
}

t.test('a snapshot during a running writer is one instant', async (t) => {
  const c = await Cluster.start('vd-snap-pit');
  t.teardown(() => c.stop());
  await c.container('c1', '256M');
  // 256 KiB segments: the writer crosses 64 of them, each first write a claim of a granted segment (or a
  // fault): 16 MiB of single 4 KiB writes outlast the snapshot (it caught the writer 1.2 MiB in, in the VM).
  await c.ok('create', 'd', '--size', '64M', '--segment-size', '256K');
  const dev = await c.attach('d', 'h1', '--queues', '2');
  const blocks = 4096; // 16 MiB of 4 KiB blocks, each stamped with its number, written in order one at a time
  const file = path.join(c.dir, 'stamped');
  const data = Buffer.alloc(blocks * 4096);
  for (let i = 0; i < blocks; i++) data.fill(`block ${i} `, i * 4096, (i + 1) * 4096);
  fs.writeFileSync(file, data);
  const writer = spawn('dd', [`if=${file}`, `of=${dev}`, 'bs=4096', 'oflag=direct', 'status=none']);
  let exited = false;
  const done = new Promise<number | null>((r) => writer.once('exit', (code) => { exited = true; r(code); }));
  // Snapshot once the writer is a few segments in (observed in the device's counters, not guessed from a
  // sleep: its claims reach the store only with its next grant request).
  const written = () => Number(fs.readFileSync(`/sys/block/${path.basename(dev)}/stat`, 'utf8').trim().split(/\s+/)[6]) * 512;
  await c.until('the writer to fill 4 segments', async () => exited || written() >= MB);
  const r = await c.vdisk('snapshot', 'd', 'pit');
  t.equal(r.status, 0, `snapshot taken while the writer runs ${r.err}`);
  t.equal(await done, 0, 'the writer finished without error');
  const snap = await c.attach('pit');
  const got = readDirect(snap, 0, blocks * 4096);
  let k = 0;
  while (k < blocks && got.subarray(k * 4096, (k + 1) * 4096).equals(data.subarray(k * 4096, (k + 1) * 4096))) k++;
  let rest = true;
  for (let i = k; i < blocks && rest; i++) rest = got.subarray(i * 4096, (i + 1) * 4096).equals(Buffer.alloc(4096));
  t.ok(k > 0 && k < blocks, `the snapshot caught the writer midway (${k} of ${blocks} blocks)`);
  t.ok(rest, 'every block after the first missing one is missing too: the snapshot is one point in time');
  t.ok(readDirect(dev, 0, blocks * 4096).equals(data), 'the origin has every block');
  t.equal(...(await c.check()));
});

t.test('a chain of 10 snapshots and clones', async (t) => {
  const c = await Cluster.start('vd-chain');
  t.teardown(() => c.stop());
  await c.container('c1', '256M');
  await c.ok('create', 'g0', '--size', '16M');
  let dev = await c.attach('g0');
  const stamps: Buffer[] = [];
  for (let i = 0; i < 10; i++) {
    stamps.push(crypto.randomBytes(64 * 1024));
    writeDirect(dev, i * MB, stamps[i]); // each generation writes its own segment
    await c.ok('snapshot', `g${i}`, `s${i}`);
    await c.ok('clone', `s${i}`, `g${i + 1}`);
    await c.ok('detach', `g${i}`);
    dev = await c.attach(`g${i + 1}`);
  }
  for (let i = 0; i < 10; i++) t.ok(readDirect(dev, i * MB, 64 * 1024).equals(stamps[i]), `g10 reads generation ${i}'s data`);
  const s4 = await c.attach('s4');
  t.ok(readDirect(s4, 4 * MB, 64 * 1024).equals(stamps[4]), 's4 reads what g4 wrote');
  t.ok(readDirect(s4, 5 * MB, 64 * 1024).equals(Buffer.alloc(64 * 1024)), 'and not what g5 wrote later');
  t.equal(...(await c.check()));
  await c.ok('detach', 's4');
  await c.ok('detach', 'g10');
  for (let i = 0; i < 10; i++) await c.ok('rm', `s${i}`);
  for (let i = 0; i <= 9; i++) await c.ok('rm', `g${i}`);
  const used = (await c.json<Array<{ usedBytes: number }>>('container', 'ls'))[0].usedBytes;
  t.equal(used, 10 * MB, 'after removing everything but g10, exactly its 10 segments remain');
  t.equal(...(await c.check()));
});

t.test('discard frees whole segments, but never one a snapshot shares', async (t) => {
  const c = await Cluster.start('vd-discard');
  t.teardown(() => c.stop());
  await c.container('c1', '256M');
  await c.ok('create', 'd', '--size', '32M');
  const dev = await c.attach('d');
  const data = crypto.randomBytes(8 * MB);
  // Segment by segment from the last: a writer going forward would get a window mapped ahead of it
  // (allocation ahead), and this test counts segments exactly.
  for (let i = 7; i >= 0; i--) writeDirect(dev, i * MB, data.subarray(i * MB, (i + 1) * MB));
  const used = async () => (await c.json<Array<{ usedBytes: number }>>('container', 'ls'))[0].usedBytes / MB;
  await c.allocated('d', 8 * MB);
  t.equal(await used(), 8, '8 segments written');
  run('blkdiscard', ['-o', '0', '-l', String(2 * MB), dev]);
  t.equal(await used(), 6, 'discarding 2 whole segments frees them');
  t.ok(readDirect(dev, 0, 2 * MB).equals(Buffer.alloc(2 * MB)), 'and they read zeros');
  await c.ok('snapshot', 'd', 's');
  run('blkdiscard', ['-o', String(2 * MB), '-l', String(2 * MB), dev]);
  t.equal(await used(), 6, 'discarding segments a snapshot shares frees nothing');
  t.ok(readDirect(dev, 2 * MB, 2 * MB).equals(Buffer.alloc(2 * MB)), 'the origin reads zeros there');
  const s = await c.attach('s');
  t.ok(readDirect(s, 2 * MB, 2 * MB).equals(data.subarray(2 * MB, 4 * MB)), 'the snapshot still has the data');
  const info = (await c.json<{ exclusiveBytes: number; sharedBytes: number }>('info', 'd'));
  t.same([info.exclusiveBytes / MB, info.sharedBytes / MB], [0, 4], 'info: the origin\'s 4 remaining segments are all shared');
  await c.ok('detach', 's');
  await c.ok('rm', 's');
  t.equal(await used(), 4, 'removing the snapshot frees exactly the 2 segments only it still held');
  t.equal(...(await c.check()));
});

t.test('out of space: ENOSPC for new segments only, until a container is added', async (t) => {
  const c = await Cluster.start('vd-nospc');
  t.teardown(() => c.stop());
  await c.container('small', '5M'); // 4 MiB after the label
  await c.ok('create', 'd', '--size', '16M');
  const dev = await c.attach('d');
  const data = crypto.randomBytes(4 * MB);
  writeDirect(dev, 0, data);
  const info = () => c.json<{ freeBytes: number; allocatedBytes: number }>('info', 'd');
  t.equal((await info()).freeBytes, 0, 'info: no room left');
  t.match(await c.ok('info', 'd'), /out of space/, 'and says so');
  const w = spawn('dd', [`of=${dev}`, 'bs=4096', `seek=${(8 * MB) / 4096}`, 'count=1', 'oflag=direct', 'status=none'], { stdio: ['pipe', 'ignore', 'pipe'] });
  let err = '';
  w.stderr.on('data', (d) => { err += d; });
  w.stdin.end(Buffer.alloc(4096, 7));
  t.not(await new Promise((r) => w.once('exit', r)), 0, 'a write needing a new segment fails');
  t.match(err, /No space left on device/, 'with ENOSPC');
  const more = crypto.randomBytes(4096);
  writeDirect(dev, MB, more);
  t.ok(readDirect(dev, MB, 4096).equals(more), 'allocated segments keep taking writes');
  t.ok(readDirect(dev, 2 * MB, 2 * MB).equals(data.subarray(2 * MB)), 'and reads');
  await c.container('big', '64M');
  writeDirect(dev, 8 * MB, more);
  t.ok(readDirect(dev, 8 * MB, 4096).equals(more), 'after adding a container, the write succeeds');
  await c.allocated('d', 5 * MB);
  t.equal((await info()).allocatedBytes, 5 * MB, 'on one new segment');
  t.equal(...(await c.check()));
});
