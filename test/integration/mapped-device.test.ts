// A device whose table does not map in order (64 KiB segments, reversed), served in-process through
// UblkDevice: large requests split into several backing operations per tag on the real kernel, data lands
// where the table says, and live state changes (Error, Zero, Invalid) take effect on the next request.
import t from 'tap';
import crypto from 'node:crypto';
import fs from 'node:fs';
import { spawnSync } from 'node:child_process';
import { MappingTable, STATE_ERROR, STATE_INVALID, STATE_ZERO } from '../../src/table/mapping-table.js';
import { UblkControlDevice } from '../../src/ublk/control.js';
import { UblkDevice } from '../../src/ublk/device.js';
import { openContainer } from '../../src/loop/container.js';
import { makeFile, readDirect, run, ublkAvailable, writeDirect } from './helpers.js';

const missing = ublkAvailable();
if (missing) t.fail(`needs a real ublk kernel: ${missing}`);

const SEG = 64 * 1024;
const SEGS = 256;

t.test('a reversed table: split I/O, placement, fio verify, live state changes', async (t) => {
  const file = makeFile('mapped', SEG * SEGS);
  const container = openContainer(file, { direct: true });
  const table = MappingTable.create({ segments: SEGS, segmentSize: SEG });
  for (let i = 0; i < SEGS; i++) table.setRange(i, 1, { states: 0, container: 0, offset: (SEGS - 1 - i) * SEG, alt: 0 });
  const fds = new Int32Array(new SharedArrayBuffer(4));
  fds[0] = container.fd;
  const control = UblkControlDevice.open();
  const dev = await UblkDevice.start(control, {
    queues: 2, depth: 32, sizeBytes: SEG * SEGS, table, containerFds: fds.buffer as SharedArrayBuffer,
  });
  t.teardown(async () => {
    await dev.stop();
    control.close();
    fs.closeSync(container.fd);
    fs.rmSync(file, { force: true });
  });

  // 512 KiB direct writes starting mid-segment: every request spans 9 segments, none contiguous.
  const data = crypto.randomBytes(SEG * SEGS);
  const r = spawnSync('dd', [`of=${dev.path}`, 'bs=512K', 'oflag=direct,seek_bytes', `seek=${SEG / 2}`, 'status=none'],
    { input: data.subarray(0, SEG * SEGS - SEG) });
  t.equal(r.status, 0, `dd wrote through the split path ${r.stderr}`);
  const back = readDirect(dev.path, 0, SEG * SEGS);
  t.ok(back.subarray(SEG / 2, SEG * SEGS - SEG / 2).equals(data.subarray(0, SEG * SEGS - SEG)), 'reads back what was written');
  const raw = readDirect(file, 0, SEG * SEGS);
  let misplaced = 0;
  for (let i = 0; i < SEGS; i++) {
    const want = back.subarray(i * SEG, (i + 1) * SEG);
    if (!raw.subarray((SEGS - 1 - i) * SEG, (SEGS - i) * SEG).equals(want)) misplaced++;
  }
  t.equal(misplaced, 0, 'every segment sits in the container where the table puts it');

  run('fio', ['--name=split', `--filename=${dev.path}`, '--ioengine=libaio', '--direct=1', '--iodepth=32', '--rw=randwrite',
    '--bsrange=4k-512k', '--verify=crc32c', '--verify_fatal=1', '--size=12M']);
  t.pass('fio verify across segment boundaries');

  // Live changes from this (the main) thread, seen by the queue workers on their next request.
  table.changeStates(10, 1, STATE_ERROR, true);
  table.setRange(11, 1, { states: STATE_ZERO, container: 0, offset: 0, alt: 0 });
  table.setRange(12, 1, { states: STATE_INVALID, container: 0, offset: 0, alt: 0 });
  const readSeg = (i: number) => spawnSync('dd', [`if=${dev.path}`, 'bs=64K', `skip=${i}`, 'count=1', 'iflag=direct', 'status=none'],
    { maxBuffer: SEG * 2 });
  const e = readSeg(10);
  t.not(e.status, 0, 'a read of an Error segment fails');
  t.match(e.stderr.toString(), /Input\/output error/, 'with EIO');
  t.ok(readSeg(11).stdout.equals(Buffer.alloc(SEG)), 'a Zero segment reads as zeros');
  t.not(readSeg(12).status, 0, 'an Invalid segment fails without a controller');
  t.ok(readSeg(9).stdout.equals(readDirect(file, (SEGS - 1 - 9) * SEG, SEG)), 'the neighbours still read their data');
  const w = spawnSync('dd', [`of=${dev.path}`, 'bs=4K', `seek=${(11 * SEG) / 4096}`, 'count=1', 'oflag=direct', 'status=none'],
    { input: Buffer.alloc(4096, 1) });
  t.not(w.status, 0, 'a write to a Zero segment faults, and fails without a controller');
  writeDirect(dev.path, 13 * SEG, Buffer.alloc(4096, 7));
  t.ok(readDirect(file, (SEGS - 1 - 13) * SEG, 4096).equals(Buffer.alloc(4096, 7)), 'writes elsewhere go on');
});
