// The agent's table commands, sent by a real in-process controller on the agent's own connection (no ublk
// needed): create, bulk set, get, state bits, refusals that leave the agent serving, and the lease that
// makes every cached entry Invalid once the controller has been gone too long, then the reconnect.
import t from 'tap';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Agent } from '../../src/agent/agent.js';
import { Controller } from '../../src/controller/controller.js';
import { socketPath } from '../../src/controller/paths.js';
import { VdiskError } from '../../src/errors.js';
import { fenceMs, leaseCheckMs, leaseDrainMs, TIMER_SLACK_MS } from '../../src/protocol/lease.js';
import type { Connection } from '../../src/protocol/connection.js';
import { ENTRY_BYTES, decodeEntry, encodeEntry } from '../../src/table/entry-codec.js';
import { STATE_ERROR, STATE_INVALID, STATE_NO_WRITE, STATE_ZERO, type Entry, type MappingTable } from '../../src/table/mapping-table.js';

const SEG = 64 * 1024;
const SEGMENTS = 16;
const LEASE_MS = 600;
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vdisk-agent-'));
const logs: string[] = [];
let controller = await Controller.start(dir);
const agent = new Agent({ controller: socketPath(dir), hostId: 'h1', leaseMs: LEASE_MS, log: (m) => logs.push(m) });
await agent.start();

t.teardown(async () => {
  await agent.stop();
  await controller.stop();
  fs.rmSync(dir, { recursive: true, force: true });
});

async function until(what: string, cond: () => boolean | Promise<boolean>, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
await until('the agent registers', () => controller.agents.get('h1') !== undefined);

const conn = (): Connection => controller.agents.get('h1')!.conn;
const table = (diskId: number): MappingTable => agent.disks.get(diskId)!.table;
const entries = (list: Entry[]): Buffer => {
  const buf = Buffer.alloc(list.length * ENTRY_BYTES);
  list.forEach((e, k) => encodeEntry(buf, k, e));
  return buf;
};
const mapped = (k: number, states = 0): Entry => ({ states, container: 3, offset: k * SEG, alt: 0 });
const create = (diskId: number, segments = SEGMENTS) =>
  conn().request('table.create', { diskId, name: `d${diskId}`, size: segments * SEG, segmentSize: SEG });

t.test('table.create makes a table of all-Invalid entries', async (t) => {
  await create(1);
  const tb = table(1);
  t.equal(tb.segments, SEGMENTS);
  t.equal(tb.segmentSize, SEG);
  t.same(Array.from({ length: SEGMENTS }, (_, i) => tb.get(i)),
    Array.from({ length: SEGMENTS }, () => ({ states: STATE_INVALID, container: 0, offset: 0, alt: 0 })), 'every entry Invalid');
  const status = (await conn().request('agent.status')).result as { disks: Array<{ grants?: { held: number; target: number; requests: number } }> };
  t.same(status, {
    pid: process.pid, hostId: 'h1', leaseMs: LEASE_MS, suspended: false, drained: false,
    disks: [{ diskId: 1, name: 'd1', device: null, io: null, delays: { parked: 0, cancelled: 0, expired: 0 }, grants: status.disks[0]?.grants }],
  });
  // A writable disk's pool asks for its first grants when its table is made (this stand-in answers none).
  t.match(status.disks[0]?.grants, { held: 0, target: (64 << 20) / SEG, unconfirmed: 0, claims: 0, empty: 0 }, 'its grant pool, empty');
});

t.test('table.set installs exactly the entries of its payload; table.get returns them', async (t) => {
  const list = [mapped(0), mapped(1, STATE_NO_WRITE), { states: STATE_ZERO, container: 0, offset: 0, alt: 0 }, mapped(7, STATE_ERROR)];
  await conn().request('table.set', { diskId: 1, first: 4 }, { payload: entries(list) });
  const tb = table(1);
  for (let i = 0; i < SEGMENTS; i++) {
    t.same(tb.get(i), i >= 4 && i < 8 ? list[i - 4] : { states: STATE_INVALID, container: 0, offset: 0, alt: 0 }, `entry ${i}`);
  }
  const r = await conn().request('table.get', { diskId: 1, first: 3, count: 6 });
  t.same(r.result, { first: 3, count: 6 });
  t.equal(r.payload?.length, 6 * ENTRY_BYTES);
  const got = Array.from({ length: 6 }, (_, k) => decodeEntry(r.payload!, k));
  t.same(got, [tb.get(3), ...list, tb.get(8)]);
  // A FLUSH of this disk must reach container 3 (mapped), not 0 (named only by the Zero entry).
  t.same([...agent.disks.get(1)!.dirty.subarray(0, 1)], [1 << 3], 'the containers the entries map are marked for FLUSH');
  await conn().request('table.set', { diskId: 1, first: 9 }, { payload: entries([{ states: STATE_INVALID, container: 9, offset: 0, alt: 0 }, { states: 0, container: 40, offset: 0, alt: 0 }]) });
  t.same([...agent.disks.get(1)!.dirty.subarray(0, 2)], [1 << 3, 1 << 8], 'an Invalid entry marks nothing; container 40 is bit 8 of word 1');
});

t.test('table.states sets and clears bits over a range, keeping locations', async (t) => {
  const before = Array.from({ length: SEGMENTS }, (_, i) => table(1).get(i));
  await conn().request('table.states', { diskId: 1, first: 4, count: 2, bits: STATE_NO_WRITE | STATE_ERROR, set: true });
  const tb = table(1);
  t.same(tb.get(4), { ...before[4], states: STATE_NO_WRITE | STATE_ERROR });
  t.same(tb.get(5), { ...before[5], states: STATE_NO_WRITE | STATE_ERROR });
  t.same(tb.get(6), before[6], 'outside the range nothing changes');
  await conn().request('table.states', { diskId: 1, first: 3, count: 3, bits: STATE_NO_WRITE | STATE_INVALID, set: false });
  t.same(tb.get(3), { ...before[3], states: 0 }, 'Invalid cleared');
  t.same(tb.get(4), { ...before[4], states: STATE_ERROR });
  t.same(tb.get(5), { ...before[5], states: STATE_ERROR }, 'location kept through set and clear');
  t.same(tb.get(2), before[2]);
});

t.test('blocking:true on a table with no device replies at once', async (t) => {
  await conn().request('table.set', { diskId: 1, first: 0, blocking: true }, { payload: entries([mapped(0)]) });
  t.same(table(1).get(0), mapped(0));
  await conn().request('table.states', { diskId: 1, first: 0, count: 1, bits: STATE_NO_WRITE, set: true, blocking: true });
  t.equal(table(1).get(0).states, STATE_NO_WRITE);
});

t.test('bad commands get an error reply and the agent keeps serving', async (t) => {
  const bad: Array<[string, Record<string, unknown>, Buffer | undefined, string | RegExp]> = [
    ['table.get', { diskId: 1, first: SEGMENTS, count: 1 }, undefined, /outside table/],
    ['table.get', { diskId: 1, first: -1, count: 1 }, undefined, 'EINVAL'],
    ['table.set', { diskId: 1, first: SEGMENTS - 1 }, entries([mapped(0), mapped(1)]), /outside table/],
    ['table.set', { diskId: 1, first: 0 }, Buffer.alloc(ENTRY_BYTES + 1), /whole number of entries/],
    ['table.states', { diskId: 1, first: 10, count: SEGMENTS, bits: STATE_NO_WRITE, set: true }, undefined, /outside table/],
    ['table.states', { diskId: 1, first: 0, count: 1, bits: 0x100, set: true }, undefined, /unknown state bits/],
    ['table.get', { diskId: 99, first: 0, count: 1 }, undefined, 'ENOENT'],
    ['table.set', { diskId: 99, first: 0 }, entries([mapped(0)]), 'ENOENT'],
    ['table.states', { diskId: 99, first: 0, count: 1, bits: STATE_NO_WRITE, set: true }, undefined, 'ENOENT'],
    ['table.set', { diskId: 1, first: 0 }, undefined, 'EINVAL'],
    ['table.create', { diskId: 5, name: 'x', size: SEG, segmentSize: 3000 }, undefined, /segment size/],
    ['no.such.op', {}, undefined, 'EUNKNOWNOP'],
  ];
  const snapshot = Array.from({ length: SEGMENTS }, (_, i) => table(1).get(i));
  for (const [op, args, payload, want] of bad) {
    const err = await conn().request(op, args, payload ? { payload } : {}).then(() => undefined, (e: VdiskError) => e);
    t.ok(err instanceof VdiskError, `${op} ${JSON.stringify(args)} is refused`);
    if (typeof want === 'string') t.equal(err?.code, want, `${op}: ${err?.message}`);
    else t.match(err?.message, want, `${op}: ${err?.code}`);
    t.ok((await conn().request('agent.status')).result, 'and the agent still answers');
  }
  t.same(Array.from({ length: SEGMENTS }, (_, i) => table(1).get(i)), snapshot, 'refused commands changed nothing');
  t.notOk(agent.disks.has(5), 'no table made from a bad shape');
  t.equal(controller.agents.get('h1')?.conn, conn(), 'on the same connection');
});

t.test('table.delete drops the table: get is then ENOENT', async (t) => {
  await create(2, 4);
  t.ok(agent.disks.has(2));
  await conn().request('table.delete', { diskId: 2 });
  t.notOk(agent.disks.has(2));
  await t.rejects(conn().request('table.get', { diskId: 2, first: 0, count: 1 }), { code: 'ENOENT' });
  await t.rejects(conn().request('table.delete', { diskId: 2 }), { code: 'ENOENT' });
});

t.test('lease: without the controller every entry turns Invalid; the agent reconnects to a new one', async (t) => {
  await create(3);
  const list = Array.from({ length: SEGMENTS }, (_, k) => mapped(k, k % 3 === 0 ? STATE_NO_WRITE : 0));
  await conn().request('table.set', { diskId: 3, first: 0 }, { payload: entries(list) });
  await controller.stop();
  await new Promise((r) => setTimeout(r, 100));
  t.notOk(table(3).get(0).states & STATE_INVALID, 'within the lease the entries stay usable');
  await until('the lease expires', () => (table(3).get(SEGMENTS - 1).states & STATE_INVALID) !== 0, LEASE_MS * 4);
  for (let i = 0; i < SEGMENTS; i++) t.same(table(3).get(i), { ...list[i], states: list[i].states | STATE_INVALID }, `entry ${i} Invalid, location kept`);
  t.ok(logs.some((m) => /lease of 600 ms expired/.test(m)), 'the agent says so');
  t.equal(table(1).get(1).states & STATE_INVALID, STATE_INVALID, 'on every table');

  controller = await Controller.start(dir);
  await until('the agent reconnects', () => controller.agents.get('h1') !== undefined);
  // The controller lists the agent before its registration reply reaches the agent, which resumes on that reply.
  const suspended = async () => ((await conn().request('agent.status')).result as { suspended: boolean }).suspended;
  await until('the agent resumes', async () => !(await suspended()));
  t.equal(await suspended(), false, 'no longer suspended');
  // The new controller reconciles: tables it never attached on h1 are dropped.
  await until('reconciliation drops the unattached tables', () => agent.disks.size === 0);
  t.pass('the agent serves the new controller\'s commands');
});

t.test('at the controller\'s bound for a lost agent, the agent has suspended and drained', async (t) => {
  for (const lease of [600, 5000, 10_000, 60_000]) {
    t.ok(fenceMs(lease) >= lease + leaseCheckMs(lease) + leaseDrainMs(lease) + TIMER_SLACK_MS,
      `lease ${lease} ms: the controller waits ${fenceMs(lease)} ms, the agent's worst case is one check (${leaseCheckMs(lease)}) and the drain (${leaseDrainMs(lease)}) past it`);
  }
  t.ok(leaseCheckMs(10_000) > 250, 'at the default lease one check period alone is longer than the 250 ms slack the controller once allowed');
  await create(5);
  const list = Array.from({ length: SEGMENTS }, (_, k) => mapped(k, 0));
  await conn().request('table.set', { diskId: 5, first: 0 }, { payload: entries(list) });
  // The controller's clock for the lost agent starts when it sees the link drop: no earlier than now.
  const lostAt = Date.now();
  await controller.stop();
  t.same(agent.leaseState, { suspended: false, drained: false }, 'just lost: still serving');
  await new Promise((r) => setTimeout(r, lostAt + fenceMs(LEASE_MS) - Date.now()));
  // Exactly where the controller would act (remap, reuse a segment): nothing may still use the old entries.
  t.same(agent.leaseState, { suspended: true, drained: true }, 'suspended and drained at the bound');
  t.ok(Array.from({ length: SEGMENTS }, (_, i) => table(5).get(i).states & STATE_INVALID).every(Boolean), 'every entry Invalid');
  controller = await Controller.start(dir);
  await until('the agent reconnects', () => controller.agents.get('h1') !== undefined);
  await until('the agent resumes', () => !agent.leaseState.suspended);
});
