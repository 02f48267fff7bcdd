// Partial writes to shared segments (alternate locations with block bitmaps, folding), copy-out, and the
// whole-segment overwrite without a copy, through the controller's fault answers on real container files.
import t from 'tap';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { checkStore } from '../../src/controller/check.js';
import { answerFault, type FaultRequest } from '../../src/controller/faults.js';
import { SegmentIo } from '../../src/controller/segment-io.js';
import { copyOutPending } from '../../src/controller/copy-out.js';
import { fold, listAlternates } from '../../src/controller/partial.js';
import { Store } from '../../src/controller/store.js';
import { references } from '../support/references.js';
import { FAULT_READ, FAULT_WRITE } from '../../src/protocol/fault-ops.js';
import { ALT_BLOCK, altLayout } from '../../src/table/alternates.js';
import { STATE_ALTERNATE, STATE_NO_WRITE, type Entry } from '../../src/table/mapping-table.js';

const MB = 1 << 20;

async function setup(t: { teardown: (fn: () => unknown) => void }, modes: { cow?: 'redirect' | 'copy-out'; partial?: 'bitmap' | 'copy' } = {}) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vdisk-partial-'));
  const file = path.join(dir, 'c.img');
  fs.writeFileSync(file, '');
  fs.truncateSync(file, 64 * MB);
  const store = await Store.open(dir);
  const io = new SegmentIo(store);
  t.teardown(async () => { io.close(); await store.close(); fs.rmSync(dir, { recursive: true, force: true }); });
  await store.addContainer('c', file, 64 * MB);
  const d = await store.createDisk({ name: 'd', size: 4 * MB, segmentSize: MB, ...modes });
  const fd = fs.openSync(file, 'r+');
  t.teardown(() => fs.closeSync(fd));
  // Segment k of d holds bytes equal to k + 1 everywhere.
  for (let seg = 0; seg < 4; seg++) {
    const e = await store.alloc.allocateSegment(d, seg);
    fs.writeSync(fd, Buffer.alloc(MB, seg + 1), 0, MB, e.offset);
  }
  await store.cow.snapshot('d', 's');
  return { store, io, d, fd, file };
}

const fault = (segment: number, offset: number, length: number, states = STATE_NO_WRITE, op = FAULT_WRITE): FaultRequest => ({ op, segment, states, offset, length });
const read = (fd: number, offset: number, length: number) => { const b = Buffer.alloc(length); fs.readSync(fd, b, 0, length, offset); return b; };
const refcount = references;

t.test('bitmap: a partial write to a shared segment copies only its blocks, and folds later', async (t) => {
  const { store, io, d, fd } = await setup(t);
  const [shared] = await store.tables.getEntries(d, 1, 1);
  const o = await answerFault(store, io, d, fault(1, 8192 + 512, 512), false);
  t.equal(o.answer.action, 'entry', 'answered with an entry');
  if (o.answer.action !== 'entry') return;
  const { entry, alternate } = o.answer;
  t.ok(entry.states & STATE_ALTERNATE, 'the entry is Alternate');
  t.notOk(entry.states & STATE_NO_WRITE, 'and no longer No-write (writes go to the alternate)');
  t.same([entry.container, entry.offset], [shared.container, shared.offset], 'it still names the shared segment');
  t.ok(alternate, 'with its alternate location');
  if (!alternate) return;
  t.equal(entry.alt, alternate.slot, 'the entry names the slot');
  t.same([...alternate.bitmap.subarray(0, 2)], [0b100, 0], 'block 2 (the 4 KiB around the write) is marked');
  t.same(read(fd, alternate.offset + 2 * ALT_BLOCK, ALT_BLOCK), Buffer.alloc(ALT_BLOCK, 2), 'its old contents were copied to the alternate');
  t.same(read(fd, alternate.offset + 3 * ALT_BLOCK, ALT_BLOCK), Buffer.alloc(ALT_BLOCK), 'and nothing else');
  t.equal(await refcount(store, shared), 2, 'the shared segment keeps both references');
  t.notOk(o.foldSoon, 'one block is not enough to fold');
  t.ok((await checkStore(store)).ok, 'check: consistent with an alternate');
  const info = await store.diskInfo('d');
  t.equal(info.alternates, 1, 'info counts the alternate');

  // More writes: blocks 0..127 (half of the segment) reach the fold threshold.
  const o2 = await answerFault(store, io, d, fault(1, 0, 128 * ALT_BLOCK, STATE_ALTERNATE), false);
  t.ok(o2.foldSoon, 'half the blocks rewritten: fold soon');
  if (o2.answer.action !== 'entry' || !o2.answer.alternate) return t.fail('no alternate');
  t.equal(o2.answer.alternate.slot, alternate.slot, 'same slot');
  t.equal(o2.answer.alternate.bitmap.readUInt32LE(0), 0xffffffff, 'blocks 0..31 marked');
  fs.writeSync(fd, Buffer.alloc(ALT_BLOCK, 0xee), 0, ALT_BLOCK, alternate.offset); // the host's write to block 0
  const folded = await fold(store, d, 1, (from, to, ranges) => io.copyRanges(from, to, ranges));
  t.ok(folded, 'folded');
  if (!folded) return;
  t.same([folded.container, folded.offset, folded.states], [alternate.container, alternate.offset, 0], 'the alternate is now the plain, private location');
  t.same(read(fd, folded.offset, ALT_BLOCK), Buffer.alloc(ALT_BLOCK, 0xee), 'the written block stays');
  t.same(read(fd, folded.offset + 200 * ALT_BLOCK, ALT_BLOCK), Buffer.alloc(ALT_BLOCK, 2), 'unwritten blocks were filled from the shared segment');
  t.equal(await refcount(store, shared), 1, 'the shared segment is the snapshot\'s alone now');
  t.same(await listAlternates(store, d.id), [], 'the alternate is gone');
  t.ok((await checkStore(store)).ok, 'check: consistent after the fold');
});

t.test('bitmap: a fragmented read folds; reload answers carry the alternate; removal releases it', async (t) => {
  const { store, io, d } = await setup(t);
  await answerFault(store, io, d, fault(2, 0, 512), false);
  const again = await answerFault(store, io, d, fault(2, 0, 4096, 1 /* Invalid after an agent restart */, FAULT_READ), false);
  t.ok(again.answer.action === 'entry' && again.answer.alternate, 'a reloading read gets the entry with its alternate');
  const r = await answerFault(store, io, d, fault(2, 0, 512 * 1024, STATE_ALTERNATE, FAULT_READ), false);
  t.ok(r.answer.action === 'entry' && !(r.answer.entry.states & STATE_ALTERNATE) && r.answer.reclaimed, 'a read the agent could not plan folds the segment (blocking push)');
  await answerFault(store, io, d, fault(3, 0, 512), false);
  t.equal((await store.listContainers())[0].usedBytes, 6 * MB, 'in use: 4 shared segments, the folded copy, one alternate');
  await store.removeDisk('d');
  t.equal((await store.listContainers())[0].usedBytes, 4 * MB, 'rm releases the folded copy and the alternate; the snapshot keeps its 4');
  t.ok((await checkStore(store)).ok, 'check: consistent after rm');
});

t.test('whole-segment overwrite of a shared segment: a fresh zeroed segment, nothing copied', async (t) => {
  const { store, io, d, fd } = await setup(t);
  const o = await answerFault(store, io, d, fault(0, 0, MB), false);
  if (o.answer.action !== 'entry') return t.fail('no entry');
  t.equal(o.answer.entry.states, 0, 'a plain private entry');
  t.same(read(fd, o.answer.entry.offset, MB), Buffer.alloc(MB), 'zeroed, not a copy of the old data');
  t.ok((await checkStore(store)).ok, 'check: consistent');
});

t.test('--partial copy copies the whole segment', async (t) => {
  const { store, io, d, fd } = await setup(t, { partial: 'copy' });
  const o = await answerFault(store, io, d, fault(1, 4096, 4096), false);
  if (o.answer.action !== 'entry') return t.fail('no entry');
  t.notOk(o.answer.alternate, 'no alternate');
  t.same(read(fd, o.answer.entry.offset, MB), Buffer.alloc(MB, 2), 'a full copy');
});

t.test('alternate slots run out: the whole segment is copied instead', async (t) => {
  const { store, io, d } = await setup(t);
  t.equal(altLayout(d).slots, 4, 'a 4-segment disk has 4 slots');
  await store.db.run('INSERT INTO alternates (disk_id, segment, slot, container_id, unit, bitmap) VALUES (?, 100, 0, 1, 0, x\'00\'), (?, 101, 1, 1, 0, x\'00\'), (?, 102, 2, 1, 0, x\'00\'), (?, 103, 3, 1, 0, x\'00\')', [d.id, d.id, d.id, d.id]);
  const o = await answerFault(store, io, d, fault(1, 0, 4096), false);
  t.ok(o.answer.action === 'entry' && !o.answer.alternate && o.answer.entry.states === 0, 'redirected with a copy');
});

t.test('copy-out: the writer keeps the segment, the snapshot moves to the copy', async (t) => {
  const { store, io, d, fd } = await setup(t, { cow: 'copy-out' });
  const s = await store.disk('s');
  const [shared] = await store.tables.getEntries(d, 1, 1);
  const o = await answerFault(store, io, d, fault(1, 0, 4096), false);
  t.ok(o.copyOut, 'the other sharers must be pushed first');
  if (o.answer.action !== 'entry') return t.fail('no entry');
  t.same([o.answer.entry.container, o.answer.entry.offset, o.answer.entry.states], [shared.container, shared.offset, 0], 'the writer keeps its location, writable');
  const [moved] = await store.tables.getEntries(s, 1, 1);
  t.not(moved.offset, shared.offset, 'the snapshot maps a new segment');
  t.ok(moved.states & STATE_NO_WRITE, 'still No-write');
  t.same(read(fd, moved.offset, MB), Buffer.alloc(MB, 2), 'holding the old data');
  t.same([await refcount(store, shared), await refcount(store, moved)], [1, 1], 'one reference each');
  t.same(await copyOutPending(store, d.id, 1), [s.id], 'the pending pushes are recorded: the snapshot\'s agents');
  const retry = await answerFault(store, io, d, fault(1, 0, 4096), false);
  t.ok(retry.copyOut, 'a retried fault (controller restart) still waits for the pushes');
  t.ok((await checkStore(store)).ok, 'check: consistent after the copy-out');
});

t.test('check notices an Alternate entry without its alternate, and sharing at two indexes', async (t) => {
  const { store, d } = await setup(t);
  const s = await store.disk('s');
  const [e0] = await store.tables.getEntries(d, 0, 1);
  await store.tables.setEntries(d, 2, [{ ...e0, states: STATE_ALTERNATE, alt: 0 } as Entry]);
  const report = await checkStore(store);
  t.match(report.problems.join('\n'), /is Alternate but has no alternate location/, 'missing alternate reported');
  t.match(report.problems.join('\n'), /different indexes/, 'sharing across indexes reported');
  t.ok(s, 'snapshot exists');
});

