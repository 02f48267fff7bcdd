// Fault routing on the real kernel with the real controller store as the handler: a thin disk (all Zero)
// allocates a segment on the first write to it, a partial write leaves the rest of the segment reading as
// zeros, reads of unwritten segments cost no I/O, ext4 works on top, and only written segments get storage.
import t from 'tap';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Store } from '../../src/controller/store.js';
import { FAULT_WRITE } from '../../src/protocol/fault-ops.js';
import { openContainer } from '../../src/loop/container.js';
import { MappingTable, STATE_ZERO } from '../../src/table/mapping-table.js';
import { UblkControlDevice } from '../../src/ublk/control.js';
import { UblkDevice, type Fault } from '../../src/ublk/device.js';
import { WORK, mkdtemp, readDirectAsync, runAsync, ublkAvailable, writeDirectAsync } from './helpers.js';

const missing = ublkAvailable();
if (missing) t.fail(`needs a real ublk kernel: ${missing}`);
const MB = 1 << 20;

t.test('thin provisioning through faults answered by the store', async (t) => {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'vdisk-thin-'));
  const img = path.join(WORK, `thin-container-${process.pid}.img`);
  fs.writeFileSync(img, '');
  fs.truncateSync(img, 256 * MB);
  const store = await Store.open(dataDir);
  const c = await store.addContainer('c1', img, 256 * MB);
  const disk = await store.createDisk({ name: 'thin', size: 128 * MB, segmentSize: MB });
  const table = MappingTable.create({ segments: disk.segments, segmentSize: disk.segmentSize });
  table.loadBytes(0, await store.tables.readTable(disk));
  const container = openContainer(img, { direct: true });
  const fds = new Int32Array(new SharedArrayBuffer(4 * (c.id + 1))).fill(-1);
  fds[c.id] = container.fd;
  const zeroFd = fs.openSync(img, 'r+'); // buffered: the zeroing is not aligned to anything the kernel needs
  const faults: Fault[] = [];
  const onFault = async (f: Fault): Promise<number> => {
    faults.push(f);
    if (f.op !== FAULT_WRITE || !(f.states & STATE_ZERO)) return -5;
    // The controller's answer (this test's main thread plays the agent: every I/O below runs asynchronously)
  //: allocate (committed before we go on), zero the new segment, install, retry.
    const entry = await store.alloc.allocateSegment(disk, f.segment);
    fs.writeSync(zeroFd, Buffer.alloc(disk.segmentSize), 0, disk.segmentSize, entry.offset);
    fs.fdatasyncSync(zeroFd);
    table.setRange(f.segment, 1, entry);
    return 0;
  };
  const control = UblkControlDevice.open();
  const dev = await UblkDevice.start(control, {
    queues: 2, depth: 32, sizeBytes: disk.size, table, containerFds: fds.buffer as SharedArrayBuffer, onFault,
  });
  const mnt = mkdtemp('thin-mnt-');
  t.teardown(async () => {
    await dev.stop();
    control.close();
    fs.closeSync(container.fd);
    fs.closeSync(zeroFd);
    await store.close();
    fs.rmSync(dataDir, { recursive: true, force: true });
    fs.rmSync(img, { force: true });
    fs.rmSync(mnt, { recursive: true, force: true });
  });

  const start = dev.ioStats();
  t.ok((await readDirectAsync(dev.path, 0, 4 * MB)).equals(Buffer.alloc(4 * MB)), 'an unwritten thin disk reads zeros');
  t.equal(dev.ioStats().readBytes - start.readBytes, 4 * MB, 'the queues counted the bytes read');
  t.equal(faults.length, 0, 'reads of Zero segments need no fault');
  t.equal((await store.diskInfo('thin')).allocatedBytes, 0);

  const data = crypto.randomBytes(8192);
  const before = dev.ioStats();
  await writeDirectAsync(dev.path, 5 * MB + 64 * 1024, data);
  t.equal(faults.length, 1, 'the first write to a Zero segment faulted once');
  const after = dev.ioStats();
  t.same([after.writeBytes - before.writeBytes, after.faults - before.faults, after.errors - before.errors], [8192, 1, 0],
    'the queues counted the write\'s bytes once (not again at its retry), its fault, and no error');
  t.equal((await store.diskInfo('thin')).allocatedBytes, MB, 'and allocated exactly one segment');
  const seg = await readDirectAsync(dev.path, 5 * MB, MB);
  t.ok(seg.subarray(64 * 1024, 64 * 1024 + 8192).equals(data), 'the written blocks read back');
  t.ok(seg.subarray(0, 64 * 1024).equals(Buffer.alloc(64 * 1024)), 'before them, zeros');
  t.ok(seg.subarray(64 * 1024 + 8192).equals(Buffer.alloc(MB - 64 * 1024 - 8192)), 'after them, zeros');
  await writeDirectAsync(dev.path, 5 * MB, crypto.randomBytes(4096));
  t.equal(faults.length, 1, 'a second write to the allocated segment needs no fault');

  await runAsync('mkfs.ext4', ['-q', '-F', '-E', 'nodiscard,lazy_itable_init=1,lazy_journal_init=1', dev.path]);
  await runAsync('mount', [dev.path, mnt]);
  const file = crypto.randomBytes(3 * MB);
  fs.writeFileSync(path.join(mnt, 'f.bin'), file);
  await runAsync('sync', []);
  await runAsync('umount', [mnt]);
  await runAsync('fsck.ext4', ['-f', '-n', dev.path]);
  await runAsync('mount', ['-o', 'ro', dev.path, mnt]);
  t.ok(fs.readFileSync(path.join(mnt, 'f.bin')).equals(file), 'a file on ext4 on the thin disk reads back');
  await runAsync('umount', [mnt]);
  const info = await store.diskInfo('thin');
  t.ok(info.allocatedBytes < disk.size / 2, `only written segments got storage (${info.allocatedBytes / MB} of ${disk.size / MB} MiB)`);
  t.equal(info.entriesByState.mapped + info.entriesByState.zero, disk.segments);
  t.ok(faults.every((f) => f.op === FAULT_WRITE), 'every fault was a first write');
});
