// DISCARD and WRITE_ZEROES reach the container (reads return zeros, the file gets holes); FLUSH and FUA
// reach it too, shown by the flush counter of a kernel loop device used as the container.
import t from 'tap';
import crypto from 'node:crypto';
import fs from 'node:fs';
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
