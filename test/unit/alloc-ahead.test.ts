// Allocation ahead for sequential writers: the stream bookkeeping alone, then a real controller with a
// scripted agent: a writer going segment after segment gets a window mapped in its batch's commit, pushed to
// its agent, reading zeros, and an agent's ahead hint maps the next one; a disk two hosts hold, random writers, short runs, a full container and
// VDISK_ALLOC_AHEAD_MB=0 get nothing ahead, nor does a writer whose writes do not start at segments' first bytes, and the faulting write itself never loses its segment to a window.
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { AllocAhead, MIN_RUN } from '../../src/controller/alloc-ahead.js';
import type { Disk } from '../../src/controller/store.js';
import { FAULT_WRITE } from '../../src/protocol/fault-ops.js';
import { STATE_ZERO, type Entry } from '../../src/table/mapping-table.js';
import { entriesOf, scriptedController } from '../support/scripted-agent.js';
import { scattered } from '../../src/bench/session.js';

const MB = 1 << 20;

/** Feeds one batch to the bookkeeping as ThinBatcher does; returns what it mapped ahead. */
function batch(a: AllocAhead, segments: number[], diskSegments = 1 << 20, segmentSize = MB): number[] {
  const ahead = a.plan(1, segmentSize, diskSegments, segments);
  a.mapped(1, segments, ahead);
  return ahead;
}

t.test('bookkeeping: a sequential writer\'s window grows with its run, up to the cap', async (t) => {
  const a = new AllocAhead(64 * MB);
  const range = (from: number, n: number) => Array.from({ length: n }, (_, i) => from + i);
  t.same(batch(a, range(0, 16)), [], 'a first batch maps only its faults');
  t.same(batch(a, range(16, 16)), range(32, 16), 'continuing a run of 16: 16 ahead');
  t.same(batch(a, range(48, 16)), range(64, 48), 'the run is 48 now: 48 ahead');
  t.same(batch(a, range(112, 16)), range(128, 64), 'capped at 64 MiB of 1 MiB segments');
  t.same(batch(a, [192]), range(193, 64), 'a lone fault continuing the stream still gets the whole window');
  t.same(batch(a, [257], 300), range(258, 42), 'clipped at the disk\'s end');
});

t.test('bookkeeping: nothing ahead for random writers, runs shorter than MIN_RUN, or a cap of 0', async (t) => {
  const a = new AllocAhead(64 * MB);
  let got = 0;
  for (let i = 0; i < 500; i++) got += batch(a, [(i * 7919) % 100_003]).length;
  t.equal(got, 0, 'scattered first writes map nothing ahead');
  const skip = new AllocAhead(64 * MB);
  for (let s = 0; s < 200; s += 2) got += batch(skip, [s]).length;
  t.equal(got, 0, 'nor a writer of every other segment');
  const bench = new AllocAhead(64 * MB);
  const order = scattered(2048);
  for (let i = 0; i < order.length; i += 64) got += batch(bench, order.slice(i, i + 64).sort((x, y) => x - y)).length;
  t.equal(got, 0, 'nor the bench\'s allocating faults, 64 at a time (they must each allocate)');
  const b = new AllocAhead(64 * MB);
  for (let s = 0; s < MIN_RUN; s++) t.same(batch(b, [s]), [], `segment ${s}: the run is ${s} long`);
  t.ok(batch(b, [MIN_RUN]).length > 0, `from a run of ${MIN_RUN} on, the writer is sequential`);
  const off = new AllocAhead(0);
  for (let s = 0; s < 20; s++) t.same(batch(off, [s]), [], 'off');
  t.equal(off.stats.segments, 0);
  const small = new AllocAhead(64 * MB);
  for (let s = 0; s < MIN_RUN; s++) batch(small, [s], 1 << 20, 32 * MB);
  t.same(batch(small, [MIN_RUN], 1 << 20, 32 * MB), [MIN_RUN + 1, MIN_RUN + 2], 'the cap is in bytes: two 32 MiB segments');
});

t.test('bookkeeping: an ahead hint counts only where the writer reached its stream\'s last window', async (t) => {
  const a = new AllocAhead(64 * MB);
  const range = (from: number, n: number) => Array.from({ length: n }, (_, i) => from + i);
  for (let s = 0; s < MIN_RUN; s++) batch(a, [s]);
  t.notOk(a.continues(1, MB, MIN_RUN, MIN_RUN - 1), 'a run mapped by faults alone has no window to be inside of');
  t.same(batch(a, [MIN_RUN]), range(MIN_RUN + 1, MIN_RUN), 'the first window');
  const end = 2 * MIN_RUN + 1;
  t.ok(a.continues(1, MB, end, MIN_RUN + 1), 'the writer in the window asks for the next one at its end');
  t.ok(a.continues(1, MB, end, MIN_RUN), 'from the batch\'s own fault on');
  t.notOk(a.continues(1, MB, end, MIN_RUN - 1), 'not from before it');
  t.notOk(a.continues(1, MB, end - 1, MIN_RUN + 1), 'nor for a segment inside what is mapped');
  t.notOk(a.continues(1, MB, 500, MIN_RUN + 1), 'nor far past the stream');
  t.notOk(new AllocAhead(0).continues(1, MB, end, MIN_RUN + 1), 'nor with allocation ahead off');
  a.mapped(1, [], range(end, end + 1)); // the hint's batch: its segment and a window as long as the run
  t.notOk(a.continues(1, MB, 2 * end + 1, MIN_RUN + 1), 'a writer still in the window before: no third window');
  t.ok(a.continues(1, MB, 2 * end + 1, end), 'once it entered the new one: yes');
});

const SEG = 64 * 1024;
const { dir, controller, scriptedAgent, ask } = await scriptedController(t, 'vdisk-ahead-');
type Answer = { action: string; entry: Entry; allocated?: boolean; errno?: number };
const img = path.join(dir, 'c1.img');
fs.writeFileSync(img, Buffer.alloc(5 * MB, 0xee)); // never blank: a window must read zeros all the same
await ask('container.add', { name: 'c1', path: img, size: 5 * MB });
const hx = await scriptedAgent('hx', 3);
const hy = await scriptedAgent('hy', 4);
const fault = async (diskId: number, segment: number): Promise<Answer> =>
  (await hx.conn.request('fault', { diskId, op: FAULT_WRITE, segment, states: STATE_ZERO, offset: 0, length: SEG })).result as Answer;

t.test('a sequential writer: its window is mapped in the batch\'s commit, pushed to its agent, reads zeros', async (t) => {
  const d = await ask<Disk>('disk.create', { name: 'seq', size: 32 * SEG, segmentSize: SEG });
  await ask('disk.attach', { name: 'seq', hostId: 'hx' });
  const disk = await controller.store.disk('seq');
  for (let s = 0; s < MIN_RUN; s++) t.match(await fault(d.id, s), { action: 'entry', allocated: true });
  const before = controller.attachments.thin!.ahead.stats.segments;
  const pushesBefore = hx.got.length;
  const a = await fault(d.id, MIN_RUN);
  t.match(a, { action: 'entry', allocated: true }, 'the faulting write gets its own segment');
  const ahead = controller.attachments.thin!.ahead.stats.segments - before;
  t.equal(ahead, MIN_RUN, `a window as long as the run (${MIN_RUN} segments) mapped ahead`);
  const stored = await controller.store.tables.getEntries(disk, 0, 32);
  const window = stored.slice(MIN_RUN + 1, 2 * MIN_RUN + 1);
  t.ok(window.every((e) => e.states === 0), 'the window is mapped in the store');
  t.ok(stored.slice(2 * MIN_RUN + 1).every((e) => e.states === STATE_ZERO), 'nothing past it');
  const bytes = fs.readFileSync(img);
  t.ok(window.every((e) => bytes.subarray(e.offset, e.offset + SEG).every((b) => b === 0)), 'every window segment reads zeros');
  t.equal(new Set(stored.slice(0, 2 * MIN_RUN + 1).map((e) => e.offset)).size, 2 * MIN_RUN + 1, 'all distinct');
  const sets = hx.got.slice(pushesBefore).filter((g) => g.op === 'table.set' && g.args.first === MIN_RUN + 1);
  t.equal(sets.length, 1, 'the faulting agent got the window in one table.set');
  t.same(entriesOf(sets[0]?.payload), window, 'the window\'s entries');
  t.equal(sets[0]?.args.blocking, false, 'not blocking: Zero and fresh storage read alike');
  const hits = controller.attachments.thin!.stats.windowHits;
  const inFlight = await fault(d.id, MIN_RUN + 1); // a request that faulted before the window reached its agent
  t.same(inFlight, { action: 'entry', entry: window[0], allocated: false }, 'a write into the window gets the window\'s entry');
  t.equal(controller.attachments.thin!.stats.windowHits, hits + 1, 'answered from the window by the batch');
  t.match(await ask('disk.info', { name: 'seq' }), { allocatedBytes: (2 * MIN_RUN + 1) * SEG });
  // A snapshot shares the window's segments (No-write): a write there now copies, it is not answered from the window.
  await ask('disk.snapshot', { name: 'seq', snapshot: 'seq-s' });
  const cow = await fault(d.id, MIN_RUN + 2);
  t.equal(controller.attachments.thin!.stats.windowHits, hits + 1, 'not from the window after a snapshot');
  t.ok(cow.action === 'entry' && cow.entry.states === 0 && cow.entry.offset !== window[1]!.offset, 'the write got a copy of its own');
  t.match(await ask('check'), { ok: true });
  await ask('disk.detach', { name: 'seq', hostId: 'hx' });
  await ask('disk.rm', { name: 'seq-s' });
  await ask('disk.rm', { name: 'seq' });
});

t.test('a disk two hosts hold maps nothing ahead: one could write into a window the other does not have yet', async (t) => {
  const d = await ask<Disk>('disk.create', { name: 'two', size: 32 * SEG, segmentSize: SEG });
  await ask('disk.attach', { name: 'two', hostId: 'hx' });
  await ask('disk.attach', { name: 'two', hostId: 'hy' });
  const before = controller.attachments.thin!.ahead.stats.segments;
  const hyBefore = hy.got.length;
  for (let s = 0; s < 3 * MIN_RUN; s++) t.match(await fault(d.id, s), { action: 'entry', allocated: true }, `segment ${s}`);
  t.equal(await hx.conn.request('fault.ahead', { diskId: d.id, segment: 3 * MIN_RUN, from: 3 * MIN_RUN - 1 }).then((r) => (r.result as { mapped: number }).mapped), 0, 'a hint is declined');
  t.equal(controller.attachments.thin!.ahead.stats.segments, before, 'nothing ahead');
  const toHy = hy.got.slice(hyBefore).filter((g) => g.op === 'table.set');
  t.same(toHy.map((g) => [g.args.first, entriesOf(g.payload).length]), Array.from({ length: 3 * MIN_RUN }, (_, i) => [i, 1]),
    'the other host got each written segment, one by one, and nothing else');
  t.match(await ask('disk.info', { name: 'two' }), { allocatedBytes: 3 * MIN_RUN * SEG }, 'exactly what was written');
  await ask('disk.detach', { name: 'two', hostId: 'hy' });
  t.match(await fault(d.id, 3 * MIN_RUN), { action: 'entry', allocated: true });
  t.ok(controller.attachments.thin!.ahead.stats.segments > before, 'held by one host again: the stream gets its window');
  await ask('disk.detach', { name: 'two', hostId: 'hx' });
  await ask('disk.rm', { name: 'two' });
});

t.test('a writer that does not start at segments\' first bytes (random 4k) maps nothing ahead, even in order', async (t) => {
  const d = await ask<Disk>('disk.create', { name: 'rnd', size: 16 * SEG, segmentSize: SEG });
  await ask('disk.attach', { name: 'rnd', hostId: 'hx' });
  const before = controller.attachments.thin!.ahead.stats.segments;
  for (let s = 0; s < 12; s++) {
    const a = (await hx.conn.request('fault', { diskId: d.id, op: FAULT_WRITE, segment: s, states: STATE_ZERO, offset: 4096 * (1 + s), length: 4096 })).result as Answer;
    t.match(a, { action: 'entry', allocated: true }, `segment ${s}`);
  }
  t.equal(controller.attachments.thin!.ahead.stats.segments, before, 'nothing ahead');
  t.match(await ask('disk.info', { name: 'rnd' }), { allocatedBytes: 12 * SEG }, 'exactly what was written');
  await ask('disk.detach', { name: 'rnd', hostId: 'hx' });
});

t.test('no room for a window: the faulting segments are still mapped, nothing ahead', async (t) => {
  // A container of its own: 4 MiB after the label = 64 segments. A 70-segment disk written in order:
  // windows until they no longer fit, then the faults alone, to the last segment.
  const img2 = path.join(dir, 'c2.img');
  fs.writeFileSync(img2, Buffer.alloc(5 * MB, 0xee));
  await ask('container.add', { name: 'c2', path: img2, size: 5 * MB });
  const d = await ask<Disk>('disk.create', { name: 'full', size: 70 * SEG, segmentSize: SEG, container: 'c2' });
  await ask('disk.attach', { name: 'full', hostId: 'hx' });
  const used = async () => (await ask<{ allocatedBytes: number }>('disk.info', { name: 'full' })).allocatedBytes / SEG;
  const aheadBefore = controller.attachments.thin!.ahead.stats.segments;
  while (await used() < 62) {
    const s = await used();
    t.match(await fault(d.id, s), { action: 'entry', allocated: true }, `segment ${s}`);
  }
  t.ok(controller.attachments.thin!.ahead.stats.segments > aheadBefore, 'windows were mapped while they fitted');
  t.equal(await used(), 62, 'no window went past the room there was');
  const answers = await Promise.all([62, 63].map((x) => fault(d.id, x)));
  t.ok(answers.every((x) => x.action === 'entry' && x.entry.states === 0), 'the last two free segments went to the two writes');
  t.equal(await used(), 64);
  t.match(await fault(d.id, 64), { action: 'error', errno: 28 }, 'then ENOSPC');
  t.match(await ask('check'), { ok: true });
});

t.test('ahead hints: a window from the hinted segment, pushed while nobody waits; declined hints map nothing', async (t) => {
  const img3 = path.join(dir, 'c3.img');
  fs.writeFileSync(img3, Buffer.alloc(5 * MB, 0xee));
  await ask('container.add', { name: 'c3', path: img3, size: 5 * MB });
  const d = await ask<Disk>('disk.create', { name: 'hinted', size: 48 * SEG, segmentSize: SEG, container: 'c3' });
  await ask('disk.attach', { name: 'hinted', hostId: 'hx' });
  const disk = await controller.store.disk('hinted');
  type Stats = { faults: Record<string, { count: number } | undefined> };
  const counts = async () => { const m = await ask<Stats>('stats'); return [m.faults.ahead?.count ?? 0, m.faults['ahead-declined']?.count ?? 0]; };
  const [okBefore, declinedBefore] = await counts();
  const used = async () => (await ask<{ allocatedBytes: number }>('disk.info', { name: 'hinted' })).allocatedBytes / SEG;
  const hint = async (segment: number, from: number) =>
    ((await hx.conn.request('fault.ahead', { diskId: d.id, segment, from })).result as { mapped: number }).mapped;
  t.equal(await hint(3, 1), 0, 'no stream yet: declined');
  for (const [segment, from] of [[48, 1], [3, 48], [2 ** 32, 1]]) {
    await t.rejects(hx.conn.request('fault.ahead', { diskId: d.id, segment, from }), { code: 'ERANGE' }, `segment ${segment} from ${from}: outside the disk, refused`);
  }
  for (let s = 0; s <= MIN_RUN; s++) await fault(d.id, s);
  const end = 2 * MIN_RUN + 1;
  t.equal(await used(), end, 'the faults and their first window');
  const thin = controller.attachments.thin!;
  const hintsBefore = thin.stats.hints;
  const pushesBefore = hx.got.length;
  t.equal(await hint(end, MIN_RUN + 1), end + 1, 'the hinted segment and a window as long as the run');
  t.equal(thin.stats.hints, hintsBefore + 1);
  t.equal(await used(), 2 * end + 1);
  const stored = await controller.store.tables.getEntries(disk, end, end + 1);
  t.ok(stored.every((e) => e.states === 0), 'mapped in the store');
  const bytes = fs.readFileSync(img3);
  t.ok(stored.every((e) => bytes.subarray(e.offset, e.offset + SEG).every((b) => b === 0)), 'and reads zeros');
  const sets = hx.got.slice(pushesBefore).filter((g) => g.op === 'table.set' && g.args.first === end);
  t.equal(sets.length, 1, 'the hinting agent got it in one table.set');
  t.same(entriesOf(sets[0]?.payload), stored, 'the entries');
  t.equal(sets[0]?.args.blocking, false, 'not blocking');
  t.equal(await hint(2 * end + 1, MIN_RUN + 2), 0, 'the writer has not reached that window: declined');
  t.equal(await hint(40, end), 0, 'a segment that does not continue the stream: declined');
  t.equal(await used(), 2 * end + 1, 'nothing mapped for them');
  t.equal(await hint(2 * end + 1, end), 2 * end + 2, 'the writer entered it: the next window (the run is 19 now)');
  t.equal(await used(), 4 * end + 3);
  t.match(await fault(d.id, end + 2), { action: 'entry' }, 'a write that faulted meanwhile gets the mapped entry');
  t.equal(await used(), 4 * end + 3, 'and nothing more is allocated');
  t.same(await counts(), [okBefore! + 2, declinedBefore! + 3], 'stats: two hints mapped a window, three were declined');
  t.match(await ask('check'), { ok: true });
});
