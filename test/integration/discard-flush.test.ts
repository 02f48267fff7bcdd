// DISCARD and WRITE_ZEROES reach the container (reads return zeros, the file gets holes); FLUSH and FUA
// reach it too, shown by the flush counter of a kernel loop device used as the container; a FLUSH reaches
// every container of its disk however many, and no other disk's.
import t from 'tap';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { Cluster } from './cluster.js';
import { makeFile, readDirect, run, serveLoop, ublkAvailable, writeDirect } from './helpers.js';

const missing = ublkAvailable();
if (missing) t.fail(`needs a real ublk kernel: ${missing}`);
const MB = 1 << 20;

t.test('blkdiscard then reads are zero, the file is punched, the rest is intact', async (t) => {
  const file = makeFile('discard', 64 * MB);
  t.teardown(() => fs.rmSync(file, { force: true }));
  const s = await serveLoop(file, ['--queues', '2']);
  const data = crypto.randomBytes(8 * MB);
  writeDirect(s.device, 0, data);
  const allocated = fs.statSync(file).blocks;
  run('blkdiscard', ['-o', '0', '-l', String(4 * MB), s.device]);
  t.ok(readDirect(s.device, 0, 4 * MB).equals(Buffer.alloc(4 * MB)), 'discarded range reads as zeros');
  t.ok(readDirect(s.device, 4 * MB, 4 * MB).equals(data.subarray(4 * MB)), 'the rest is untouched');
  t.ok(readDirect(file, 0, 4 * MB).equals(Buffer.alloc(4 * MB)), 'the container holds zeros there');
  t.ok(fs.statSync(file).blocks < allocated, `the container was punched (${allocated} -> ${fs.statSync(file).blocks} blocks)`);

  run('blkdiscard', ['-z', '-o', String(5 * MB), '-l', String(MB), s.device]);
  t.ok(readDirect(s.device, 5 * MB, MB).equals(Buffer.alloc(MB)), 'write-zeroes range reads as zeros');
  t.ok(readDirect(s.device, 4 * MB, MB).equals(data.subarray(4 * MB, 5 * MB)), 'before it intact');
  t.ok(readDirect(s.device, 6 * MB, 2 * MB).equals(data.subarray(6 * MB)), 'after it intact');
  t.equal(await s.stop(), 0);
});

function flushes(dev: string): number {
  // /sys/block/<dev>/stat field 16 (index 15): flush requests completed
  return Number(fs.readFileSync(`/sys/block/${dev}/stat`, 'utf8').trim().split(/\s+/)[15]);
}

t.test('FLUSH and FUA reach the container', async (t) => {
  const file = makeFile('flush', 32 * MB);
  const loop = run('losetup', ['-f', '--show', file]).trim();
  t.teardown(() => { run('losetup', ['-d', loop]); fs.rmSync(file, { force: true }); });
  const name = loop.replace('/dev/', '');
  const s = await serveLoop(loop, ['--queues', '1']);
  const before = flushes(name);
  writeDirect(s.device, 0, crypto.randomBytes(64 * 1024));
  t.equal(flushes(name), before, 'a plain direct write sends no flush to the container');

  const data = crypto.randomBytes(64 * 1024);
  writeDirect(s.device, MB, data, ['conv=fsync']);
  const afterFsync = flushes(name);
  t.ok(afterFsync > before, `fsync of the ublk device flushed the container (${before} -> ${afterFsync})`);
  t.ok(readDirect(loop, MB, data.length).equals(data), 'the data is in the container');

  writeDirect(s.device, 2 * MB, crypto.randomBytes(4096), ['dsync']);
  t.ok(flushes(name) > afterFsync, `an O_DSYNC (FUA) write made the container durable (${afterFsync} -> ${flushes(name)})`);
  t.equal(await s.stop(), 0);
});

t.test('a FLUSH reaches each of the disk\'s containers, more than a request\'s record budget, and no other disk\'s', async (t) => {
  const t0 = Date.now();
  const mark = (what: string) => t.comment(`${what} at ${Date.now() - t0} ms`);
  const c = await Cluster.start('vd-flush-many');
  const loops: string[] = [];
  // Loop devices show each container's flushes; over tmpfs files their own flushes cost nothing.
  const back = fs.mkdtempSync(path.join(fs.existsSync('/dev/shm') ? '/dev/shm' : c.dir, 'vd-flush-'));
  t.teardown(async () => {
    await c.stop();
    for (const l of loops) run('losetup', ['-d', l]);
    fs.rmSync(back, { recursive: true, force: true });
  });
  const loopOf = async (name: string): Promise<string> => {
    const file = path.join(back, `${name}.img`);
    fs.writeFileSync(file, '');
    fs.truncateSync(file, 2 * MB); // the label's MiB, then one segment
    const loop = run('losetup', ['-f', '--show', file]).trim();
    loops.push(loop);
    await c.ok('container', 'add', name, '--path', loop);
    return loop;
  };
  // Another disk fills container "other" first, so the disk under test cannot allocate there.
  const other = await loopOf('other');
  await c.ok('create', 'e', '--size', '1M', '--container', 'other');
  writeDirect(await c.attach('e'), 0, crypto.randomBytes(MB));
  const n = 16; // one 1 MiB segment each: more containers than the 15 fdatasyncs a request's records hold
  const mine: string[] = [];
  mark('the other disk written');
  for (let k = 0; k < n; k++) mine.push(await loopOf(`c${k}`));
  mark(`${n} containers added`);
  await c.ok('create', 'd', '--size', `${n}M`);
  const dev = await c.attach('d', 'h1', '--queues', '1', '--depth', '1');
  const data = crypto.randomBytes(n * MB);
  mark('attached');
  writeDirect(dev, 0, data);
  mark('written');
  const name = (l: string) => l.replace('/dev/', '');
  const before = mine.map((l) => flushes(name(l)));
  const otherBefore = flushes(name(other));
  writeDirect(dev, 0, data.subarray(0, 4096), ['conv=fsync']);
  const after = mine.map((l) => flushes(name(l)));
  t.same(after.map((a, k) => a > before[k]), mine.map(() => true), `fsync flushed all ${n} containers of the disk (${before.join(',')} -> ${after.join(',')})`);
  t.equal(flushes(name(other)), otherBefore, 'and not the other disk\'s container');
  t.ok(readDirect(dev, 0, n * MB).equals(data), 'every byte reads back; the queue kept serving');
  writeDirect(dev, MB, data.subarray(0, MB), ['conv=fsync']);
  t.ok(readDirect(dev, MB, MB).equals(data.subarray(0, MB)), 'and still does after another flush');
  t.equal(...(await c.check()));
});
