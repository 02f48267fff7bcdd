// The controller's pushes around copy-on-write, with scripted agents: a partial write to a shared segment
// sends the alternate record, then the entry, to the disk's other holders before the writer's answer; a
// copy-out moves the snapshot's agents to the copy (blocking) before the writer may write; a snapshot folds
// the alternates first; `disk.fold` folds on request. Data movement itself is in partial-cow.test.ts.
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import type { Disk } from '../../src/controller/store.js';
import { FAULT_WRITE } from '../../src/protocol/fault-ops.js';
import { ALT_BLOCK } from '../../src/table/alternates.js';
import { STATE_ALTERNATE, STATE_NO_WRITE, STATE_ZERO, type Entry } from '../../src/table/mapping-table.js';
import { entriesOf, scriptedController, type Peer } from '../support/scripted-agent.js';

const SEG = 64 * 1024;
const MB = 1 << 20;
const { dir, events, scriptedAgent, ask } = await scriptedController(t, 'vdisk-ctlcow-');
type Answer = { action: string; entry: Entry; allocated?: boolean; alternate?: { slot: number; container: number; offset: number; bitmap: string } };
const fault = async (p: Peer, diskId: number, segment: number, states: number, offset: number, length: number): Promise<Answer> => {
  const r = (await p.conn.request('fault', { diskId, op: FAULT_WRITE, segment, states, offset, length })).result as Answer;
  events.push(`${p === hx ? 'hx' : 'hy'}:answer`);
  return r;
};

const img = path.join(dir, 'c1.img');
fs.writeFileSync(img, '');
fs.truncateSync(img, 16 * MB);
await ask('container.add', { name: 'c1', path: img, size: 16 * MB });
const hx = await scriptedAgent('hx', 1);
const hy = await scriptedAgent('hy', 2);
interface Check { ok: boolean; problems: string[] }

t.test('bitmap: the other holder gets the alternate, then the entry, before the writer\'s answer', async (t) => {
  const d = await ask<Disk>('disk.create', { name: 'b', size: 4 * SEG, segmentSize: SEG });
  await ask('disk.attach', { name: 'b', hostId: 'hx' });
  await ask('disk.attach', { name: 'b', hostId: 'hy' });
  await fault(hx, d.id, 0, STATE_ZERO, 0, SEG);
  await ask('disk.snapshot', { name: 'b', snapshot: 'b-snap' });
  events.length = 0;
  const a = await fault(hx, d.id, 0, STATE_NO_WRITE, 2 * ALT_BLOCK, 512);
  t.same(events, ['hy:table.alt', 'hy:table.set', 'hx:answer'], 'alternate, entry, then the answer');
  t.ok(a.entry.states & STATE_ALTERNATE, 'the answer is an Alternate entry');
  t.ok(a.alternate, 'carrying its alternate');
  const alt = hy.got.find((g) => g.op === 'table.alt')!;
  t.match(alt.args, { diskId: d.id, slot: a.alternate?.slot, container: a.alternate?.container, offset: a.alternate?.offset });
  t.same([...(alt.payload ?? [])], [0b100, 0, 0, 0], 'the bitmap, as the binary payload');
  t.same(Buffer.from(a.alternate?.bitmap ?? '', 'base64'), alt.payload, 'the writer got the same bitmap (base64 in JSON)');
  t.match(await ask('disk.info', { name: 'b' }), { alternates: 1 }, 'info counts it');

  events.length = 0;
  t.same(await ask('disk.fold', { name: 'b' }), { folded: 1 }, 'fold on request');
  t.same(events.sort(), ['hx:table.set', 'hy:table.set'], 'the folded entry goes to every holder');
  const push = hy.got.at(-1)!;
  t.equal(push.args.blocking, true, 'with the blocking flag');
  t.equal(entriesOf(push.payload)[0].states, 0, 'a plain entry');
  t.match(await ask<Check>('check'), { ok: true }, 'check: consistent');
});

t.test('a snapshot folds the disk\'s alternates first', async (t) => {
  const d = await ask<Disk>('disk.create', { name: 'f', size: 4 * SEG, segmentSize: SEG });
  await ask('disk.attach', { name: 'f', hostId: 'hx' });
  await fault(hx, d.id, 1, STATE_ZERO, 0, SEG);
  await ask('disk.snapshot', { name: 'f', snapshot: 'f1' });
  await fault(hx, d.id, 1, STATE_NO_WRITE, 0, 4096);
  await ask('disk.snapshot', { name: 'f', snapshot: 'f2' });
  t.match(await ask('disk.info', { name: 'f' }), { alternates: 0 }, 'no alternate left');
  t.match(await ask<Check>('check'), { ok: true }, 'check: consistent with three sharers');
});

t.test('copy-out: the snapshot\'s agent maps the copy (blocking) before the writer gets its answer', async (t) => {
  const d = await ask<Disk>('disk.create', { name: 'o', size: 4 * SEG, segmentSize: SEG, cow: 'copy-out' });
  await ask('disk.attach', { name: 'o', hostId: 'hx' });
  const first = await fault(hx, d.id, 2, STATE_ZERO, 0, SEG);
  const s = await ask<Disk>('disk.snapshot', { name: 'o', snapshot: 'o-snap' });
  await ask('disk.attach', { name: 'o-snap', hostId: 'hy' });
  events.length = 0;
  const a = await fault(hx, d.id, 2, STATE_NO_WRITE, 0, 4096);
  t.same(events, ['hy:table.set', 'hx:answer'], 'the snapshot\'s holder first');
  t.same([a.entry.container, a.entry.offset, a.entry.states], [first.entry.container, first.entry.offset, 0], 'the writer keeps its segment, writable');
  const push = hy.got.at(-1)!;
  t.match(push.args, { diskId: s.id, first: 2, blocking: true }, 'the snapshot\'s entry, blocking');
  const moved = entriesOf(push.payload)[0];
  t.not(moved.offset, first.entry.offset, 'now names the copy');
  t.ok(moved.states & STATE_NO_WRITE, 'still No-write');
  t.match(await ask<Check>('check'), { ok: true }, 'check: consistent');
  events.length = 0;
  await fault(hx, d.id, 2, STATE_NO_WRITE, 0, 4096);
  t.same(events, ['hx:answer'], 'a later fault pushes nothing');
});

t.test('bad modes are refused', async (t) => {
  await t.rejects(ask('disk.create', { name: 'x', size: SEG, cow: 'sideways' }), { code: 'EINVAL' });
  await t.rejects(ask('disk.create', { name: 'x', size: SEG, partial: 'some' }), { code: 'EINVAL' });
});
