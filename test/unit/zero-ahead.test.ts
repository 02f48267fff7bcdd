// The zeroed frontier (allocator.ts): thin faults take fresh segments that zero-ahead made read as zeros, with no
// zeroing of their own, and nothing that may hold bytes (a reservation a flow wrote into and gave back) is ever
// taken for fresh. Real files and the controller's real SegmentIo; containers start full of 0xee.
import t from 'tap';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { SegmentIo } from '../../src/controller/segment-io.js';
import { Store } from '../../src/controller/store.js';
import { ZERO_AHEAD_UNITS } from '../../src/controller/allocator.js';
import { answerFault } from '../../src/controller/faults.js';
import { FAULT_WRITE } from '../../src/protocol/fault-ops.js';
import { LOCATION_UNIT, STATE_NO_WRITE, type Entry } from '../../src/table/mapping-table.js';

const MB = 1 << 20;

async function setup(t: { teardown: (fn: () => unknown) => void }, containerMb = 256) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vdisk-za-'));
  const store = await Store.open(dir);
  const io = new SegmentIo(store);
  const zeroes: Array<[number, number]> = [];
  let hook: (() => Promise<void>) | undefined;
  store.alloc.pool.zeroer = async (container, offset, length) => {
    zeroes.push([offset, length]);
    await io.zero(container, offset, length);
    const h = hook;
    hook = undefined;
    await h?.();
  };
  t.teardown(async () => {
    io.close();
    await store.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  const img = path.join(dir, 'c1.img');
  fs.writeFileSync(img, Buffer.alloc(containerMb * MB, 0xee)); // never blank: only zeroing makes zeros
  await store.addContainer('c1', img, containerMb * MB);
  const disk = await store.createDisk({ name: 'd', size: 128 * MB, segmentSize: MB });
  const bytesAt = (e: Entry, n = MB) => {
    const fd = fs.openSync(img, 'r');
    const b = Buffer.alloc(n);
    fs.readSync(fd, b, 0, n, e.offset);
    fs.closeSync(fd);
    return b;
  };
  const units = async () => (await store.db.get<{ next_unit: number; zeroed_unit: number }>('SELECT next_unit, zeroed_unit FROM containers WHERE id = 1'))!;
  return { store, io, img, disk, zeroes, bytesAt, units, setHook: (h: () => Promise<void>) => { hook = h; } };
}

t.test('thin faults into fresh storage: no zeroing of their own, one zero-ahead for many, every segment reads zeros', async (t) => {
  const s = await setup(t);
  let prepared = 0;
  const got: Entry[] = [];
  for (let i = 0; i < 20; i++) got.push(await s.store.alloc.allocateSegment(s.disk, i, async () => { prepared++; }));
  t.equal(prepared, 0, 'no fault zeroed its own segment');
  t.ok(s.zeroes.length >= 1 && s.zeroes.length <= 2, `zero-ahead ran ${s.zeroes.length} time(s) for 20 faults`);
  t.ok(got.every((e) => s.bytesAt(e).every((b) => b === 0)), 'every new segment reads zeros');
  t.same(Object.keys(got[0]!).sort(), ['alt', 'container', 'offset', 'states'], 'the entry carries nothing but the entry');
  const u = await s.units();
  t.ok(u.next_unit <= u.zeroed_unit, `the bump pointer stays inside the frontier (${u.next_unit} <= ${u.zeroed_unit})`);
});

t.test('a batch of fresh segments is mapped by one transaction, with no zeroing callback', async (t) => {
  const s = await setup(t);
  await s.store.alloc.allocateSegment(s.disk, 0); // the first zero-ahead
  await s.store.alloc.pool.extend(1, 0); // and let any refill finish, so it does not count below
  const before = s.store.db.stats.transactions;
  let zeroCalls = 0;
  const mapped = await s.store.alloc.allocateSegments(s.disk, [3, 4, 5, 6, 7, 8, 9, 10], async () => { zeroCalls++; });
  t.equal(mapped.size, 8);
  t.equal(zeroCalls, 0, 'nothing zeroed by the batch');
  t.equal(s.store.db.stats.transactions - before, 1, 'one transaction');
  t.ok([...mapped.values()].every((e) => s.bytesAt(e).every((b) => b === 0)), 'every segment reads zeros');
  const stored = await s.store.tables.getEntries(s.disk, 3, 8);
  t.same(stored, [...mapped.values()], 'the table names them');
});

t.test('a reservation its flow wrote into and gave back is not fresh again', async (t) => {
  const s = await setup(t);
  await s.store.alloc.allocateSegment(s.disk, 0);
  let written: Entry | undefined;
  await t.rejects(s.store.alloc.staged(s.disk, 1, async (_e, _put, reserve) => {
    const loc = await reserve();
    return {
      io: async () => {
        written = loc;
        const fd = fs.openSync(s.img, 'r+');
        fs.writeSync(fd, Buffer.alloc(MB, 0xab), 0, MB, loc.offset); // a copy landed, then the flow failed
        fs.closeSync(fd);
        throw new Error('copy failed after writing');
      },
      commit: async () => undefined,
    };
  }), /copy failed/);
  const u = await s.units();
  t.equal(u.zeroed_unit, written!.offset / LOCATION_UNIT, 'the frontier ends where the written segment starts');
  const again = await s.store.alloc.allocateSegment(s.disk, 1);
  t.equal(again.offset, written!.offset, 'the same storage is allocated again');
  t.ok(s.bytesAt(again).every((b) => b === 0), 'and reads zeros, not the failed flow\'s bytes');
});

t.test('a restart forgets the frontier: bytes that a flow of a lost commit wrote above the bump pointer are zeroed before use', async (t) => {
  const s = await setup(t);
  await s.store.alloc.allocateSegment(s.disk, 0);
  const before = await s.units();
  t.ok(before.zeroed_unit > before.next_unit, `a frontier was built (${before.next_unit} < ${before.zeroed_unit})`);
  // A power cut took back a reservation whose copy had reached the container: the bump pointer is where the
  // durable state left it, and the bytes above it are not zeros.
  const fd = fs.openSync(s.img, 'r+');
  fs.writeSync(fd, Buffer.alloc(MB, 0xab), 0, MB, before.next_unit * LOCATION_UNIT);
  fs.closeSync(fd);
  const dir = path.dirname(s.img);
  const again = await Store.open(dir);
  const io = new SegmentIo(again);
  t.teardown(async () => { io.close(); await again.close(); });
  const after = (await again.db.get<{ next_unit: number; zeroed_unit: number }>('SELECT next_unit, zeroed_unit FROM containers WHERE id = 1'))!;
  t.same(after, { next_unit: before.next_unit, zeroed_unit: before.next_unit }, 'after the restart nothing above the bump pointer is known zero');
  const zeroes: number[] = [];
  again.alloc.pool.zeroer = async (container, offset, length) => { zeroes.push(offset); await io.zero(container, offset, length); };
  const disk = await again.disk('d');
  const e = await again.alloc.allocateSegment(disk, 1);
  t.equal(e.offset, before.next_unit * LOCATION_UNIT, 'the storage after the last durable allocation is taken');
  t.ok(s.bytesAt(e).every((b) => b === 0), 'and reads zeros, not the lost flow\'s bytes');
});

t.test('zero-ahead does not extend a frontier that was lowered while it zeroed', async (t) => {
  const s = await setup(t);
  await s.store.alloc.allocateSegment(s.disk, 0);
  await s.store.alloc.pool.extend(1, 0);
  const low = await s.units();
  let lowered = -1;
  // While the next zero-ahead runs, a flow's reservation at the top is given back: bytes below are unknown now.
  s.setHook(async () => {
    await s.store.db.transaction(async () => {
      const loc = await s.store.alloc.pool.segment(MB / LOCATION_UNIT, null, true, 'segment');
      lowered = loc.offset / LOCATION_UNIT;
      await s.store.alloc.pool.unreserve({ container: 1, unit: lowered, units: MB / LOCATION_UNIT, count: 1 });
    });
  });
  await s.store.alloc.pool.extend(1, low.zeroed_unit + 1);
  const u = await s.units();
  t.equal(u.zeroed_unit, lowered, 'the frontier stays at the given-back segment');
  t.ok(lowered >= low.next_unit, 'which was above the bump pointer');
});

t.test('without a zeroer (a store used alone) nothing is fresh: every new segment is zeroed by its flow', async (t) => {
  const s = await setup(t);
  s.store.alloc.pool.zeroer = null;
  let prepared = 0;
  const e = await s.store.alloc.allocateSegment(s.disk, 0, async (loc, len) => { prepared++; await s.io.zero(loc.container, loc.offset, len); });
  t.equal(prepared, 1);
  t.ok(s.bytesAt(e).every((b) => b === 0));
  t.equal(s.zeroes.length, 0);
});

t.test('zero-ahead reaches past what was asked, and never past the container', async (t) => {
  const s = await setup(t, 8);
  await s.store.alloc.allocateSegment(s.disk, 0);
  const u = await s.units();
  t.equal(u.zeroed_unit, (8 * MB) / LOCATION_UNIT, 'an 8 MiB container: its end');
  t.ok(ZERO_AHEAD_UNITS * LOCATION_UNIT > 8 * MB);
  for (let i = 1; i < 8; i++) await s.store.alloc.allocateSegment(s.disk, i); // a container without label: from 0
  await t.rejects(s.store.alloc.allocateSegment(s.disk, 8), { code: 'ENOSPC' }, 'full: no space, not an endless zero-ahead');
});

t.test('a whole-segment copy-on-write into fresh storage writes nothing: the segment reads zeros for the writer', async (t) => {
  const s = await setup(t);
  const e = await s.store.alloc.allocateSegment(s.disk, 0);
  const fd = fs.openSync(s.img, 'r+');
  fs.writeSync(fd, Buffer.alloc(MB, 0x5a), 0, MB, e.offset); // the origin's data
  fs.closeSync(fd);
  await s.store.cow.snapshot('d', 'snap');
  const calls: string[] = [];
  const spy = new Proxy(s.io, {
    get(target, prop, receiver) {
      const v = Reflect.get(target, prop, receiver) as unknown;
      if (typeof v !== 'function') return v;
      return (...args: unknown[]) => { calls.push(String(prop)); return (v as (...a: unknown[]) => unknown).apply(target, args); };
    },
  });
  const whole = { op: FAULT_WRITE, segment: 0, states: STATE_NO_WRITE, offset: 0, length: MB };
  const o = await answerFault(s.store, spy, await s.store.disk('d'), whole, false);
  t.match(o.answer, { action: 'entry', allocated: true });
  const moved = (o.answer as { entry: Entry }).entry;
  t.not(moved.offset, e.offset, 'redirected to a new segment');
  t.same(calls, [], 'no zeroing or copying for it');
  t.ok(s.bytesAt(moved).every((b) => b === 0), 'which reads zeros');
  t.ok(s.bytesAt(e).every((b) => b === 0x5a), 'and the snapshot keeps the data');
  const partial = { op: FAULT_WRITE, segment: 1, states: STATE_NO_WRITE, offset: 0, length: 4096 };
  const e1 = await s.store.alloc.allocateSegment(await s.store.disk('d'), 1);
  t.ok(e1, 'a second segment, allocated after the snapshot, is private: no copy for it either');
  t.same((await answerFault(s.store, spy, await s.store.disk('d'), partial, false)).answer, { action: 'entry', entry: e1 });
});

t.test('a batch bigger than zero-ahead widens the margin: the next such batch finds zeroed storage, no zeroing in its path', async (t) => {
  const s = await setup(t, 512);
  const disk = await s.store.createDisk({ name: 'big', size: 256 * MB, segmentSize: MB });
  const zero = async () => { throw new Error('fresh storage needs no zeroing'); };
  const batch = (from: number) => s.store.alloc.allocateSegments(disk, Array.from({ length: 100 }, (_, i) => from + i), zero);
  t.equal((await batch(0)).size, 100, 'a 100 MiB batch (zero-ahead is 64 MiB)');
  s.store.alloc.pool.refill(); // what the controller starts after a batch, in the background
  await Promise.all([...(s.store.alloc.pool as unknown as { extending: Map<number, Promise<void>> }).extending.values()]);
  const u = await s.units();
  t.ok(u.zeroed_unit - u.next_unit >= (100 * MB) / LOCATION_UNIT, `the frontier keeps room for another such batch (${u.zeroed_unit - u.next_unit} units)`);
  const before = s.zeroes.length;
  t.equal((await batch(100)).size, 100, 'the next 100');
  t.equal(s.zeroes.length, before, 'with no zero-ahead in its path');
  t.ok((await s.store.tables.getEntries(disk, 100, 100)).every((e) => s.bytesAt(e).every((b) => b === 0)), 'and every segment reads zeros');
});
