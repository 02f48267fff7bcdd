// Group commit of copy-on-write faults, with a real controller and a scripted agent: concurrent writes into a
// snapshot's shared segments share batches; a partial write gets a copy of the shared bytes, a whole-segment
// write a zeroed segment without a copy; the snapshot keeps its data; each new mapping is committed before
// its answer and went to the disk's other host first; what a batch cannot settle still gets its answer.
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import type { Disk } from '../../src/controller/store.js';
import { FAULT_WRITE } from '../../src/protocol/fault-ops.js';
import { STATE_NO_WRITE, STATE_ZERO, type Entry } from '../../src/table/mapping-table.js';
import { entriesOf, scriptedController } from '../support/scripted-agent.js';

const SEG = 64 * 1024;
const MB = 1 << 20;
const { dir, controller, scriptedAgent, ask } = await scriptedController(t, 'vdisk-cowbatch-');
type Answer = { action: string; entry: Entry; allocated?: boolean; errno?: number };

const img = path.join(dir, 'c1.img');
fs.writeFileSync(img, Buffer.alloc(4 * MB, 0xee)); // never blank: a whole-segment write's segment must read zeros all the same
await ask('container.add', { name: 'c1', path: img, size: 4 * MB });
const hx = await scriptedAgent('hx', 3);
const hy = await scriptedAgent('hy', 4);
const write = async (diskId: number, segment: number, states: number, whole: boolean): Promise<Answer> =>
  (await hx.conn.request('fault', { diskId, op: FAULT_WRITE, segment, states, offset: whole ? 0 : 4096, length: whole ? SEG : 4096 })).result as Answer;
/** Segment s of the origin holds this byte before the snapshot. */
const fill = (s: number) => 0x10 + s;

t.test('16 concurrent writes into shared segments: grouped, copied or fresh, committed and pushed before their answers', async (t) => {
  const d = await ask<Disk>('disk.create', { name: 'o', size: 16 * SEG, segmentSize: SEG, partial: 'copy' });
  await ask('disk.attach', { name: 'o', hostId: 'hx' });
  const store = controller.store;
  const disk = await store.disk('o');
  const first = await Promise.all(Array.from({ length: 16 }, (_, s) => write(d.id, s, STATE_ZERO, false)));
  const fd = fs.openSync(img, 'r+');
  for (const [s, a] of first.entries()) fs.writeSync(fd, Buffer.alloc(SEG, fill(s)), 0, SEG, a.entry.offset); // what the agent wrote
  fs.closeSync(fd);
  await ask('disk.snapshot', { name: 'o', snapshot: 'o-snap' });
  await ask('disk.attach', { name: 'o', hostId: 'hy' });
  const pushesBefore = hy.got.length;
  const before = { ...controller.attachments.cow?.stats ?? { batches: 0, faults: 0 } };
  const db = store.db;
  await db.sync();
  const lazyBefore = db.stats.lazyCommits;
  const committedAtAnswer: boolean[] = [];
  const answers = await Promise.all(Array.from({ length: 16 }, (_, s) => write(d.id, s, STATE_NO_WRITE, s >= 12).then(async (a) => {
    const [stored] = await store.tables.getEntries(disk, s, 1);
    committedAtAnswer.push(stored.states === 0 && stored.offset === a.entry.offset);
    return a;
  })));
  t.ok(answers.every((a) => a.action === 'entry' && a.allocated && a.entry.states === 0), 'every write got a private segment');
  const olds = new Set(first.map((a) => a.entry.offset));
  t.ok(answers.every((a) => !olds.has(a.entry.offset)), 'none of them the shared one');
  t.equal(new Set(answers.map((a) => a.entry.offset)).size, 16, 'sixteen distinct segments');
  t.same(committedAtAnswer, Array(16).fill(true), 'each remap was in the store when its answer arrived');
  t.ok(db.stats.lazyCommits > lazyBefore && db.lazyPending > 0, 'both holders are on this machine: the remaps committed without their own fsync');
  t.ok(((await hx.conn.request('disk.sync', { diskId: d.id })).result as { commits: number }).commits > 0, 'a disk.sync made them durable');
  const stats = controller.attachments.cow!.stats;
  t.equal(stats.faults - before.faults, 16, 'all settled by batches');
  t.ok(stats.batches - before.batches < 16, `grouped: ${stats.batches - before.batches} batch(es) for 16 writes`);
  const bytes = fs.readFileSync(img);
  const at = (a: Answer) => bytes.subarray(a.entry.offset, a.entry.offset + SEG);
  t.ok(answers.slice(0, 12).every((a, s) => at(a).every((b) => b === fill(s))), 'partial writes: each segment holds a copy of its shared bytes');
  t.ok(answers.slice(12).every((a) => at(a).every((b) => b === 0)), 'whole-segment writes: zeroed storage, nothing copied');
  t.ok(first.every((a, s) => bytes.subarray(a.entry.offset, a.entry.offset + SEG).every((b) => b === fill(s))), 'the snapshot\'s segments are unchanged');
  const snap = await store.disk('o-snap');
  t.same((await store.tables.getEntries(snap, 0, 16)).map((e) => e.offset), first.map((a) => a.entry.offset), 'and still the snapshot\'s');
  const sets = hy.got.slice(pushesBefore).filter((g) => g.op === 'table.set');
  t.same(sets.map((g) => [g.args.first, entriesOf(g.payload)[0]?.offset]).sort((x, y) => Number(x[0]) - Number(y[0])),
    answers.map((a, s) => [s, a.entry.offset]), 'the other host got every new mapping');
  t.same(await write(d.id, 3, STATE_NO_WRITE, false), { action: 'entry', entry: answers[3].entry }, 'a late fault for a remapped segment gets its entry');
  t.match(await ask('check'), { ok: true });
  await ask('disk.detach', { name: 'o', hostId: 'hy' });
});

t.test('no copy where nobody shares any more; the one-fault path for what a batch cannot settle', async (t) => {
  const d = await ask<Disk>('disk.create', { name: 'p', size: 4 * SEG, segmentSize: SEG, partial: 'copy' });
  await ask('disk.attach', { name: 'p', hostId: 'hx' });
  const first = await Promise.all(Array.from({ length: 4 }, (_, s) => write(d.id, s, STATE_ZERO, false)));
  await ask('disk.snapshot', { name: 'p', snapshot: 'p-snap' });
  await ask('disk.rm', { name: 'p-snap' }); // entries stay No-write, but nobody else names their segments
  await ask('disk.states', { name: 'p', first: 3, count: 1, bits: STATE_NO_WRITE, set: true }); // held by the operator
  const answers = await Promise.all(Array.from({ length: 4 }, (_, s) => write(d.id, s, STATE_NO_WRITE, false)));
  t.same(answers.slice(0, 3).map((a) => [a.action, a.entry.offset, a.entry.states, a.allocated]),
    first.slice(0, 3).map((a) => ['entry', a.entry.offset, 0, false]), 'unshared: No-write cleared in place, no new segment');
  t.equal(answers[3].action, 'delay', 'the held segment\'s write waits');
  await ask('disk.states', { name: 'p', first: 3, count: 1, bits: STATE_NO_WRITE, set: false });
  t.match(await ask('check'), { ok: true });
});
