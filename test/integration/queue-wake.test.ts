// The native queue against a real ublk device, without the CLI: a wake that arrives before or while the
// queue fetches its tags must not be lost (it once was, and a failed start then hung in teardown), and bad
// plan records fail only their own request with EIO while the queue keeps serving (they once threw mid-batch,
// after earlier tags were committed, and killed the queue).
import t from 'tap';
import fs from 'node:fs';
import { addon } from '../../src/native/addon.js';
import * as abi from '../../src/native/abi.js';
import { UblkControlDevice } from '../../src/ublk/control.js';
import { deviceParams } from '../../src/ublk/device.js';
import { MappingTable } from '../../src/table/mapping-table.js';
import { readDirectAsync, ublkAvailable } from './helpers.js';

const missing = ublkAvailable();
if (missing) t.fail(`needs a real ublk kernel: ${missing}`);

t.test('a wake sent before fetchAll() still ends the next run()', async (t) => {
  const native = addon();
  const control = UblkControlDevice.open();
  t.teardown(() => control.close());
  const info = await control.addDev({ nrHwQueues: 1, queueDepth: 4, maxIoBufBytes: 64 << 10, flags: 0n });
  const table = MappingTable.create({ segments: 1, segmentSize: 1 << 20 });
  await control.setParams(info.devId, deviceParams({
    queues: 1, depth: 4, maxIoBufBytes: 64 << 10, sizeBytes: 1 << 20, table,
    containerFds: new SharedArrayBuffer(4),
  }));
  let cdev = -1;
  for (let i = 0; i < 250 && cdev < 0; i++) {
    try { cdev = fs.openSync(`/dev/ublkc${info.devId}`, 'r+'); } catch { await new Promise((r) => setTimeout(r, 20)); }
  }
  const wake = native.eventfd();
  const status = new Int32Array(abi.STATUS_LEN);
  const q = new native.UblkQueue({
    cdevFd: cdev, qId: 0, depth: 4, maxIoBufBytes: 64 << 10, wakeFd: wake, encoded: (info.flags & (1n << 6n)) !== 0n,
    ready: new Uint32Array(4 * abi.READY_STRIDE), completed: new Uint32Array(4), plan: new Int32Array(4 * abi.MAX_OPS_PER_TAG * abi.PLAN_STRIDE), status,
  });
  native.eventfdWrite(wake);
  q.fetchAll();
  t.equal(status[abi.STATUS_IN_KERNEL], 4, 'every tag is parked in the kernel');
  const n = q.run(0, true, 5000);
  t.equal(n, 0, 'no requests on a device that was never started');
  t.equal(status[abi.STATUS_WAKEUPS], 1, 'run() returned on the early wake (counted), not at its timeout');
  q.close();
  fs.closeSync(cdev);
  fs.closeSync(wake);
  await control.delDev(info.devId);
  t.notOk(fs.existsSync(`/dev/ublkc${info.devId}`), 'device deleted');
});

t.test('bad plan records fail their own request with EIO; the queue, the device and the process keep serving', async (t) => {
  const native = addon();
  const control = UblkControlDevice.open();
  t.teardown(() => control.close());
  const depth = 4;
  const bufBytes = 64 << 10;
  const size = 8 << 20;
  const info = await control.addDev({ nrHwQueues: 1, queueDepth: depth, maxIoBufBytes: bufBytes, flags: 0n });
  const table = MappingTable.create({ segments: 8, segmentSize: 1 << 20 });
  await control.setParams(info.devId, deviceParams({ queues: 1, depth, maxIoBufBytes: bufBytes, sizeBytes: size, table, containerFds: new SharedArrayBuffer(4) }));
  let cdev = -1;
  for (let i = 0; i < 250 && cdev < 0; i++) {
    try { cdev = fs.openSync(`/dev/ublkc${info.devId}`, 'r+'); } catch { await new Promise((r) => setTimeout(r, 20)); }
  }
  const wake = native.eventfd();
  const status = new Int32Array(abi.STATUS_LEN);
  const ready = new Uint32Array(depth * abi.READY_STRIDE);
  const plan = new Int32Array(depth * abi.MAX_OPS_PER_TAG * abi.PLAN_STRIDE);
  const q = new native.UblkQueue({
    cdevFd: cdev, qId: 0, depth, maxIoBufBytes: bufBytes, wakeFd: wake, encoded: (info.flags & (1n << 6n)) !== 0n,
    ready, completed: new Uint32Array(depth), plan, status,
  });
  q.fetchAll();
  t.throws(() => q.fetchAll(), { code: 'EALREADY' }, 'a second fetchAll() is refused, not run');

  let nOps = 0;
  const rec = (op: number, tag: number, fd: number, bufOff: number, len: number) => {
    plan.set([op, tag, fd, 0, bufOff, len, 0, 0], nOps * abi.PLAN_STRIDE);
    nOps++;
  };
  // Serves every request as zeros, except reads of the sectors in `hold`, which wait (owned, unplanned).
  const held = new Map<number, number>(); // sector -> tag
  const hold = new Set<number>();
  const serve = (n: number) => {
    for (let i = 0; i < n; i++) {
      const r = i * abi.READY_STRIDE;
      const tag = ready[r + abi.READY_TAG];
      const op = ready[r + abi.READY_OP_FLAGS] & 0xff;
      const sector = ready[r + abi.READY_SECTOR_LO];
      const len = ready[r + abi.READY_NR_SECTORS] * 512;
      if (op === abi.UBLK_IO_OP_READ && hold.has(sector)) { held.set(sector, tag); continue; }
      if (op === abi.UBLK_IO_OP_READ) rec(abi.OP_ZERO, tag, 0, 0, len);
      rec(abi.OP_COMMIT, tag, op === abi.UBLK_IO_OP_READ || op === abi.UBLK_IO_OP_WRITE ? len : 0, 0, 0);
    }
  };
  const step = async () => {
    const ops = nOps;
    nOps = 0;
    serve(q.run(ops, true, 20));
    await new Promise((r) => setImmediate(r));
  };
  let started = false;
  const start = control.startDev(info.devId, process.pid).then(() => { started = true; });
  while (!started) await step(); // the kernel reads the partition table before START_DEV completes
  await start;
  const dev = `/dev/ublkb${info.devId}`;

  const reads = async (offsets: number[]) => {
    for (const o of offsets) hold.add(o / 512);
    const p = offsets.map((o) => readDirectAsync(dev, o, 4096).then((b) => b, (e: Error) => e));
    while (offsets.some((o) => !held.has(o / 512))) await step();
    return p;
  };
  // Round 1: an unknown op for one request, a record naming a tag nobody owns, and a good request.
  const [a, b] = await reads([4 << 20, 5 << 20]);
  const before = status[abi.STATUS_BAD_RECORDS];
  rec(99, held.get((4 << 20) / 512)!, 0, 0, 4096);
  rec(abi.OP_COMMIT, held.get((4 << 20) / 512)!, 4096, 0, 0);
  rec(abi.OP_ZERO, depth + 3, 0, 0, 4096);
  rec(abi.OP_ZERO, held.get((5 << 20) / 512)!, 0, 0, 4096);
  rec(abi.OP_COMMIT, held.get((5 << 20) / 512)!, 4096, 0, 0);
  held.clear();
  hold.clear();
  const done = Promise.all([a, b]);
  let results: Array<Buffer | Error> | undefined;
  void done.then((r) => { results = r; });
  while (!results) await step();
  t.match(String(results[0]), /Input\/output error/, 'the request with the unknown op failed with EIO');
  t.same(results[1], Buffer.alloc(4096), 'the good request in the same batch completed');
  t.equal(status[abi.STATUS_BAD_RECORDS] - before, 2, 'both bad records were counted');

  // Round 2: a record outside its tag buffer fails its request; the next one is served.
  const [c] = await reads([6 << 20]);
  rec(abi.OP_ZERO, held.get((6 << 20) / 512)!, 0, bufBytes - 512, 4096);
  rec(abi.OP_COMMIT, held.get((6 << 20) / 512)!, 4096, 0, 0);
  held.clear();
  hold.clear();
  let third: Buffer | Error | undefined;
  void c.then((r) => { third = r; });
  while (!third) await step();
  t.match(String(third), /Input\/output error/, 'a record past the tag buffer failed its request with EIO');
  let fourth: Buffer | Error | undefined;
  void readDirectAsync(dev, 7 << 20, 4096).then((r) => { fourth = r; }, (e: Error) => { fourth = e; });
  while (!fourth) await step();
  t.same(fourth, Buffer.alloc(4096), 'the queue still serves');

  let stopped = false;
  const stop = control.stopDev(info.devId).then(() => { stopped = true; });
  while (!stopped) await step();
  await stop;
  q.close();
  t.throws(() => q.fetchAll(), { code: 'EBADF' }, 'fetchAll() on a closed queue is refused');
  fs.closeSync(cdev);
  fs.closeSync(wake);
  await control.delDev(info.devId);
});
