// The controller's side of attach, faults and table pushes, with scripted peers playing the agents (the real
// agent is tested in a VM): the command sequence of attach, thin allocation with zeroing, idempotent and
// refused faults, pushes to the other holders, container failure, detach, and the refusals that protect data.
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import type { Container, Disk } from '../../src/controller/store.js';
import { FAULT_READ, FAULT_WRITE } from '../../src/protocol/fault-ops.js';
import { ENTRY_BYTES } from '../../src/table/entry-codec.js';
import { LABEL_BYTES, LABEL_RESERVED_BYTES } from '../../src/label/container-label.js';
import { entriesOf, scriptedController, type Peer } from '../support/scripted-agent.js';
import { STATE_ERROR, STATE_ZERO, type Entry } from '../../src/table/mapping-table.js';

const SEG = 64 * 1024;
const SEGMENTS = 8;
const MB = 1 << 20;
const { dir, controller, cli, events, scriptedAgent, ask } = await scriptedController(t, 'vdisk-ctlagent-');
type Answer = { action: string; entry: Entry; allocated?: boolean };
const fault = async (p: Peer, diskId: number, op: number, segment: number): Promise<Answer> =>
  (await p.conn.request('fault', { diskId, op, segment, states: STATE_ZERO })).result as Answer;

const img = path.join(dir, 'c1.img');
fs.writeFileSync(img, Buffer.alloc(2 * MB, 0xff));
const c1 = await ask<Container>('container.add', { name: 'c1', path: img, size: 2 * MB });
const disk = await ask<Disk>('disk.create', { name: 'd1', size: SEGMENTS * SEG, segmentSize: SEG });
const hx = await scriptedAgent('hx', 7);
let allocated: Entry;
let hy: Peer;

t.test('attach: table.create, then the whole table in bulk (all Zero), then device.start', async (t) => {
  const r = await ask<Record<string, unknown>>('disk.attach', { name: 'd1', hostId: 'hx', queues: 1, depth: 64 });
  t.same(r, { device: '/dev/ublkb7', devId: 7, hostId: 'hx', queues: 1 });
  t.same(hx.ops(), ['table.create', 'table.set', 'device.start']);
  const [create, set, start] = hx.got.filter((g) => g.op !== 'containers.set');
  t.same(create.args, { diskId: disk.id, name: 'd1', size: SEGMENTS * SEG, segmentSize: SEG, readOnly: false });
  t.match(set.args, { diskId: disk.id, first: 0 });
  t.equal(set.payload?.length, SEGMENTS * ENTRY_BYTES, 'one 16-byte entry per segment');
  t.ok(entriesOf(set.payload).every((e) => e.states === STATE_ZERO), 'a thin disk is all Zero');
  t.same(start.args, { diskId: disk.id, queues: 1, depth: 64 });
  const sets = hx.got.filter((g) => g.op === 'containers.set');
  t.ok(sets.length > 0, 'the agent was told the containers');
  t.same(sets.at(-1)?.args, { containers: [{ id: c1.id, path: img, uuid: c1.uuid, size: 2 * MB }] }, 'with what its label says');
  t.same(await ask('attachment.ls'), [{ diskId: disk.id, disk: 'd1', hostId: 'hx', devId: 7 }]);
  t.match(await ask('agent.ls'), [{ hostId: 'hx', pid: process.pid, leaseMs: 5000, disks: ['d1'] }]);
});

t.test('refusals: rm of an attached disk, attach without an agent, attach twice', async (t) => {
  await t.rejects(cli.request('disk.rm', { name: 'd1' }), { code: 'EBUSY' });
  await t.rejects(cli.request('disk.attach', { name: 'd1', hostId: 'nobody' }), { code: 'ENOAGENT' });
  await t.rejects(cli.request('disk.attach', { name: 'd1', hostId: 'hx' }), { code: 'EEXIST' });
  t.same(hx.ops(), ['table.create', 'table.set', 'device.start'], 'no commands sent for refused requests');
});

t.test('write fault on a Zero segment allocates a zeroed segment; faults are idempotent', async (t) => {
  const a = await fault(hx, disk.id, FAULT_WRITE, 2);
  t.match(a, { action: 'entry', allocated: true, entry: { states: 0, container: c1.id } });
  allocated = a.entry;
  t.equal(allocated.offset % SEG, 0, 'segment-aligned');
  t.ok(allocated.offset >= LABEL_RESERVED_BYTES, 'after the label\'s reserve');
  const bytes = fs.readFileSync(img);
  t.ok(bytes.subarray(allocated.offset, allocated.offset + SEG).every((b) => b === 0), 'the new segment reads as zeros');
  t.ok(bytes.subarray(LABEL_BYTES, allocated.offset).every((b) => b === 0xff), 'nothing below it was touched');
  // Above it the zeroed frontier may have moved ahead of need: zeros or the old bytes, nothing else.
  t.ok(bytes.subarray(allocated.offset + SEG).every((b) => b === 0xff || b === 0), 'above it only zero-ahead');
  const again = await fault(hx, disk.id, FAULT_WRITE, 2);
  t.same(again.entry, allocated, 'a second write fault gets the same entry');
  t.notOk(again.allocated, 'without allocating again');
  t.same(await fault(hx, disk.id, FAULT_READ, 5), { action: 'entry', entry: { states: STATE_ZERO, container: 0, offset: 0, alt: 0 } },
    'a read fault on an unallocated segment gets the Zero entry');
  t.match(await ask('disk.info', { name: 'd1' }), { allocatedBytes: SEG, entriesByState: { mapped: 1, zero: SEGMENTS - 1 } });
});

t.test('refused faults: out of range, unknown disk, not from an agent', async (t) => {
  await t.rejects(fault(hx, disk.id, FAULT_WRITE, SEGMENTS), { code: 'ERANGE' });
  await t.rejects(fault(hx, 999, FAULT_READ, 0), { code: 'ENOENT' });
  await t.rejects(cli.request('fault', { diskId: disk.id, op: FAULT_WRITE, segment: 1 }), { code: 'EPERM' });
  await t.rejects(cli.request('agent.ping'), { code: 'EPERM' });
  t.same(await hx.conn.request('agent.ping'), { result: {} }, 'the agent may ping');
  t.same(hx.ops().filter((op) => op === 'table.set').length, 1, 'faults push nothing to the faulting agent');
});

t.test('a new allocation reaches the other holders before the faulting agent gets its answer', async (t) => {
  hy = await scriptedAgent('hy', 8);
  t.match(await ask('disk.attach', { name: 'd1', hostId: 'hy' }), { device: '/dev/ublkb8', hostId: 'hy' });
  const load = hy.got.find((g) => g.op === 'table.set');
  t.same(entriesOf(load?.payload)[2], allocated, 'the bulk load carries the allocated segment');
  events.length = 0;
  const a = await fault(hx, disk.id, FAULT_WRITE, 3).then((r) => { events.push('hx:answer'); return r; });
  t.ok(a.allocated);
  t.same(events, ['hy:table.set', 'hx:answer'], 'hy installs the entry first');
  const push = hy.got.at(-1)!;
  t.match(push.args, { diskId: disk.id, first: 3 });
  t.equal(push.payload?.length, ENTRY_BYTES);
  t.same(entriesOf(push.payload), [a.entry]);
  t.notSame(a.entry.offset, allocated.offset, 'a segment of its own');
  events.length = 0;
  await fault(hx, disk.id, FAULT_WRITE, 3);
  await fault(hy, disk.id, FAULT_READ, 3);
  t.same(events, [], 'faults that allocate nothing push nothing');
});

t.test('container.fail pushes the table with Error entries, blocking, to every holder', async (t) => {
  const before = { hx: hx.got.length, hy: hy.got.length };
  t.same(await ask('container.fail', { name: 'c1' }), { disks: [{ disk: 'd1', entries: 2 }] });
  const want = [STATE_ZERO, STATE_ZERO, STATE_ERROR, STATE_ERROR, STATE_ZERO, STATE_ZERO, STATE_ZERO, STATE_ZERO];
  for (const [name, p] of [['hx', hx], ['hy', hy]] as const) {
    const pushed = p.got.slice(before[name]).filter((g) => g.op === 'table.set');
    t.equal(pushed.length, 1, `${name} got one table.set`);
    t.match(pushed[0]?.args, { diskId: disk.id, first: 0, blocking: true });
    t.same(entriesOf(pushed[0]?.payload).map((e) => e.states), want, `${name}: Error on the allocated segments only`);
  }
  t.match(await fault(hx, disk.id, FAULT_WRITE, 2), { action: 'entry', entry: { states: STATE_ERROR } }, 'a fault now gets the Error entry');
});

t.test('detach stops the device and drops the attachment; then rm works', async (t) => {
  t.same(await ask('disk.detach', { name: 'd1', hostId: 'hx' }), { detached: ['hx'] });
  t.same(hx.got.at(-1), { op: 'device.stop', args: { diskId: disk.id }, payload: undefined });
  t.same((await ask<Array<{ hostId: string }>>('attachment.ls')).map((a) => a.hostId), ['hy']);
  await t.rejects(cli.request('disk.rm', { name: 'd1' }), { code: 'EBUSY' }, 'still attached on hy');
  t.same(await ask('disk.detach', { name: 'd1' }), { detached: ['hy'] });
  t.equal(events.at(-1), 'hy:device.stop');
  await t.rejects(cli.request('disk.detach', { name: 'd1' }), { code: 'ENOENT' });
  t.same(await ask('disk.rm', { name: 'd1' }), {});
  t.same(await ask('disk.ls'), []);
  t.match(await ask('controller.status'), { pid: process.pid, disks: 0, containers: 1, serverId: controller.serverId });
});
