// The controller's side of grants and claims (src/controller/grants.ts), with scripted peers playing the agents:
// granted segments read as zeros and are counted by check, claims map them once and only where the host still
// has the grant at a Zero entry, and every way a grant ends (a revocation by a second attach, a detach, a
// re-registration) applies the claims first and frees the rest. The real agent's claims are tested in a VM.
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import type { Container, Disk } from '../../src/controller/store.js';
import type { Claim, GrantedSegment } from '../../src/protocol/agent-ops.js';
import { FAULT_RECLAIM, FAULT_WRITE } from '../../src/protocol/fault-ops.js';
import { LOCATION_UNIT, STATE_NO_WRITE, STATE_ZERO, type Entry } from '../../src/table/mapping-table.js';
import { entriesOf, scriptedController, type Peer } from '../support/scripted-agent.js';

const SEG = 64 * 1024;
const SEGMENTS = 8;
const MB = 1 << 20;
const { dir, controller, ask, scriptedAgent } = await scriptedController(t, 'vdisk-grants-');
const img = path.join(dir, 'c1.img');
fs.writeFileSync(img, Buffer.alloc(4 * MB, 0xff));
const c1 = await ask<Container>('container.add', { name: 'c1', path: img, size: 4 * MB });
const disk = await ask<Disk>('disk.create', { name: 'd1', size: SEGMENTS * SEG, segmentSize: SEG });
const hx = await scriptedAgent('hx', 7);
await ask('disk.attach', { name: 'd1', hostId: 'hx' });
const grants = controller.attachments.grants;

type GrantResult = { grants: GrantedSegment[]; claimed: number; refused?: string };
const grant = async (p: Peer, want: number, claims: Claim[] = []) =>
  (await p.conn.request('disk.grant', { diskId: disk.id, want, claims })).result as GrantResult;
const entries = async (): Promise<Entry[]> => controller.store.tables.getEntries(disk, 0, SEGMENTS);
const granted = async () => (await controller.store.db.all<{ n: number }>('SELECT COUNT(*) AS n FROM grants'))[0].n;
const check = async () => ask<{ ok: boolean; problems: string[] }>('check');
const zeroed = (g: GrantedSegment) => fs.readFileSync(img).subarray(g.offset, g.offset + SEG).every((b) => b === 0);
const claim = (segment: number, g: GrantedSegment): Claim => ({ segment, container: g.container, offset: g.offset });

let held: GrantedSegment[] = [];

t.test('a grant is zeroed storage of the disk that no table names', async (t) => {
  const r = await grant(hx, 4);
  t.equal(r.grants.length, 4, 'four segments granted');
  t.equal(r.refused, undefined);
  t.ok(r.grants.every((g) => g.container === c1.id && g.offset % SEG === 0), 'segment-aligned, on the disk\'s container');
  t.equal(new Set(r.grants.map((g) => g.offset)).size, 4, 'four different segments');
  t.ok(r.grants.every(zeroed), 'each reads as zeros in the container');
  t.ok((await entries()).every((e) => e.states === STATE_ZERO), 'the table is untouched');
  t.equal(await granted(), 4);
  t.same(await check(), { ...(await check()), ok: true, problems: [] }, 'check counts granted segments as allocated and named');
  held = r.grants;
});

t.test('claims map granted segments at Zero entries, once; others are refused', async (t) => {
  const r = await grant(hx, 0, [claim(1, held[0]), claim(3, held[1])]);
  t.same(r, { grants: [], claimed: 2 }, 'two claims applied, nothing more asked');
  const e = await entries();
  t.same(e[1], { states: 0, container: held[0].container, offset: held[0].offset, alt: 0 });
  t.same(e[3], { states: 0, container: held[1].container, offset: held[1].offset, alt: 0 });
  t.equal(await granted(), 2, 'the claimed grants are the table\'s now');
  t.same((await grant(hx, 0, [claim(1, held[0])])).claimed, 1, 'a claim sent again counts as applied');
  const refusedBefore = grants.stats.refused;
  t.same((await grant(hx, 0, [claim(5, held[0]), { segment: 6, container: c1.id, offset: 3 * MB }])).claimed, 0,
    'a grant claimed already, and storage never granted, are refused');
  t.equal(grants.stats.refused - refusedBefore, 2);
  t.same((await entries())[5].states, STATE_ZERO, 'their entries stay Zero');
  t.same((await entries())[6].states, STATE_ZERO);
  t.ok((await check()).ok, 'check is clean');
});

t.test('disk.sync and faults apply the claims they carry, before anything else', async (t) => {
  const { commits } = (await hx.conn.request('disk.sync', { diskId: disk.id, claims: [claim(4, held[2])] })).result as { commits: number };
  t.ok(commits >= 1, `the sync made the claim's lazy commit durable (${commits} commits)`);
  t.same((await entries())[4], { states: 0, container: held[2].container, offset: held[2].offset, alt: 0 });
  // A discard of a claimed segment the controller had not heard of: the claim is applied first, so the
  // discard finds the segment mapped and reclaims it, rather than a later claim undoing the discard.
  await hx.conn.request('fault', { diskId: disk.id, op: FAULT_RECLAIM, segment: 2, states: 0, offset: 0, length: SEG, claims: [claim(2, held[3])] });
  t.equal(await granted(), 0, 'the claim took the last grant');
  t.same((await entries())[2].states, STATE_ZERO, 'and the discard then emptied the segment again');
  t.ok((await check()).ok);
});

t.test('a second holder attaching revokes the grants first: the claims are applied, the rest freed', async (t) => {
  const r = await grant(hx, 3);
  t.equal(r.grants.length, 3);
  hx.claims.revoke = [claim(6, r.grants[0])];
  const hy = await scriptedAgent('hy', 8);
  await ask('disk.attach', { name: 'd1', hostId: 'hy' });
  t.ok(hx.ops().includes('grants.revoke'), 'hx was asked for its claims');
  t.same((await entries())[6], { states: 0, container: r.grants[0].container, offset: r.grants[0].offset, alt: 0 }, 'its claim is mapped');
  const load = hy.got.find((g) => g.op === 'table.set');
  t.same(entriesOf(load?.payload)[6], (await entries())[6], 'and in the table the new holder loaded');
  t.equal(await granted(), 0, 'the unclaimed grants are freed');
  t.match(await grant(hx, 4), { grants: [], refused: 'the disk is not attached to this host alone' }, 'no grants while two hosts hold it');
  t.ok((await check()).ok);
  await ask('disk.detach', { name: 'd1', hostId: 'hy' });
});

t.test('a detach applies the stopped device\'s last claims and frees its grants', async (t) => {
  const r = await grant(hx, 2);
  t.equal(r.grants.length, 2);
  hx.claims.stop = [claim(7, r.grants[1])];
  await ask('disk.detach', { name: 'd1', hostId: 'hx' });
  t.same((await entries())[7], { states: 0, container: r.grants[1].container, offset: r.grants[1].offset, alt: 0 });
  t.equal(await granted(), 0);
  t.ok((await check()).ok);
  await ask('disk.attach', { name: 'd1', hostId: 'hx' });
});

t.test('a registration applies the claims it carries and frees every grant of its host', async (t) => {
  const { grants: g } = await grant(hx, 3);
  t.equal(g.length, 3);
  const reg = await hx.conn.request('agent.register', { pid: process.pid, leaseMs: 5000, disks: [], claims: [{ diskId: disk.id, ...claim(5, g[0]) }] });
  t.same(reg.result, { claims: 1 }, 'the claim is applied');
  t.same((await entries())[5], { states: 0, container: g[0].container, offset: g[0].offset, alt: 0 });
  t.equal(await granted(), 0, 'no grant of the host is left');
  t.ok((await check()).ok);
});

t.test('a disk with grants gets no windows ahead: one pushed over a claimed segment would take its data', async (t) => {
  const d2 = await ask<Disk>('disk.create', { name: 'seq', size: 32 * SEG, segmentSize: SEG });
  await ask('disk.attach', { name: 'seq', hostId: 'hx' });
  const r = (await hx.conn.request('disk.grant', { diskId: d2.id, want: 2, claims: [] })).result as GrantResult;
  t.equal(r.grants.length, 2);
  // The agent claims segment 10 and has not said so yet; then a sequential writer faults its way along.
  const pushesBefore = hx.got.filter((g) => g.op === 'table.set' && g.args.diskId === d2.id).length;
  for (const segment of [0, 1, 2, 3, 4, 9]) {
    await hx.conn.request('fault', { diskId: d2.id, op: FAULT_WRITE, segment, states: STATE_ZERO, offset: 0, length: SEG });
  }
  t.equal(hx.got.filter((g) => g.op === 'table.set' && g.args.diskId === d2.id).length, pushesBefore, 'no window was pushed to the writer');
  t.same((await controller.store.tables.getEntries(d2, 10, 1))[0].states, STATE_ZERO, 'segment 10 is still Zero in the store');
  const c = (await hx.conn.request('disk.grant', { diskId: d2.id, want: 0, claims: [claim(10, r.grants[0])] })).result as GrantResult;
  t.equal(c.claimed, 1, 'so the claim maps it');
  await ask('disk.detach', { name: 'seq', hostId: 'hx' });
  await ask('disk.rm', { name: 'seq' });
  t.ok((await check()).ok);
});

t.test('grants are refused when turned off, for read-only disks, and beyond 1024', async (t) => {
  process.env.VDISK_GRANTS = '0';
  t.teardown(() => { delete process.env.VDISK_GRANTS; });
  t.match(await grant(hx, 2), { grants: [], refused: 'grants are off (VDISK_GRANTS=0)' });
  delete process.env.VDISK_GRANTS;
  await t.rejects(grant(hx, 1025), { code: 'EINVAL' });
  await ask('disk.detach', { name: 'd1', hostId: 'hx' });
  await ask('disk.snapshot', { name: 'd1', snapshot: 's1' });
  const s1 = await ask<Disk>('disk.info', { name: 's1' });
  await ask('disk.attach', { name: 's1', hostId: 'hx' });
  t.match((await hx.conn.request('disk.grant', { diskId: s1.id, want: 2, claims: [] })).result, { grants: [], refused: 'the disk is read-only' });
  t.equal(await granted(), 0);
});

t.test('a forced detach of a lost host frees its grants; so does removing a disk a crash left some on', async (t) => {
  await ask('disk.attach', { name: 'd1', hostId: 'hx' });
  t.equal((await grant(hx, 2)).grants.length, 2);
  hx.silence();
  await hx.conn.close();
  await ask('disk.detach', { name: 'd1', hostId: 'hx', force: true });
  t.equal(await granted(), 0, 'the forced detach freed them');
  const hz = await scriptedAgent('hz', 9);
  await ask('disk.attach', { name: 'd1', hostId: 'hz' });
  t.equal((await grant(hz, 2)).grants.length, 2);
  // A controller that crashed between a detach's record and its release of the grants.
  await controller.store.removeAttachment(disk.id, 'hz');
  await ask('disk.rm', { name: 'd1' });
  t.equal(await granted(), 0, 'the removal freed them');
  t.ok((await check()).ok, 'nothing leaked');
});

t.test('copy-on-write claims: allowed with the grants of a redirect disk; a claim remaps a shared entry, the snapshot keeps its segment', async (t) => {
  const hc = await scriptedAgent('hc', 11);
  const cw = await ask<Disk>('disk.create', { name: 'cw', size: 4 * SEG, segmentSize: SEG, thick: true });
  await ask('disk.snapshot', { name: 'cw', snapshot: 'cw-s' });
  const snap = await ask<Disk>('disk.info', { name: 'cw-s' });
  await ask('disk.attach', { name: 'cw', hostId: 'hc' });
  type CowGrant = GrantResult & { cow?: string };
  const grantCw = async (want: number, claims: Claim[] = []) => (await hc.conn.request('disk.grant', { diskId: cw.id, want, claims })).result as CowGrant;
  const r = await grantCw(2);
  t.equal(r.grants.length, 2);
  t.equal(r.cow, 'whole', 'the grants of a redirect-on-write disk serve whole-segment copy-on-write claims (--partial bitmap: no copy)');
  const [old] = await controller.store.tables.getEntries(cw, 2, 1);
  t.equal(old.states, STATE_NO_WRITE, 'the entry is shared with the snapshot');
  t.equal((await grantCw(0, [claim(2, r.grants[0])])).claimed, 0, 'a Zero claim at a No-write entry is refused');
  t.equal((await grantCw(0, [{ ...claim(2, r.grants[0]), cow: true }])).claimed, 1, 'a copy-on-write claim there is applied');
  t.same((await controller.store.tables.getEntries(cw, 2, 1))[0], { states: 0, container: r.grants[0].container, offset: r.grants[0].offset, alt: 0 },
    'the entry maps the grant, writable');
  t.same((await controller.store.tables.getEntries(snap, 2, 1))[0], old, 'the snapshot still maps the old segment');
  t.equal((await grantCw(0, [{ ...claim(2, r.grants[0]), cow: true }])).claimed, 1, 'sent again: counted as applied');
  t.ok((await check()).ok, 'check is clean: the old segment keeps the snapshot\'s reference, the new one the disk\'s');
  // A No-write entry nobody else names any more (its snapshot removed): the claim frees the old segment.
  const lone = await ask<Disk>('disk.create', { name: 'cw-lone', size: 2 * SEG, segmentSize: SEG, thick: true });
  await ask('disk.snapshot', { name: 'cw-lone', snapshot: 'cw-lone-s' });
  await ask('disk.rm', { name: 'cw-lone-s' });
  await ask('disk.attach', { name: 'cw-lone', hostId: 'hc' });
  const [was] = await controller.store.tables.getEntries(lone, 1, 1);
  t.equal(was.states, STATE_NO_WRITE, 'still No-write after its snapshot went');
  const lg = (await hc.conn.request('disk.grant', { diskId: lone.id, want: 1, claims: [] })).result as CowGrant;
  t.equal(((await hc.conn.request('disk.grant', { diskId: lone.id, want: 0, claims: [{ ...claim(1, lg.grants[0]), cow: true }] })).result as CowGrant).claimed, 1);
  const named = await controller.store.db.get<{ n: number }>('SELECT COUNT(*) AS n FROM allocations WHERE container_id = ? AND unit = ?', [was.container, was.offset / LOCATION_UNIT]);
  t.equal(named?.n, 0, 'the old segment is no longer allocated');
  t.ok((await check()).ok, 'check is clean');
  await ask('disk.detach', { name: 'cw-lone', hostId: 'hc' });
  await ask('disk.rm', { name: 'cw-lone' });
  // An operator's hold revokes the grants; the next ones come without the rule.
  await ask('disk.states', { name: 'cw', first: 3, count: 1, bits: STATE_NO_WRITE, set: true });
  t.equal(await controller.store.db.get<{ n: number }>('SELECT COUNT(*) AS n FROM grants WHERE disk_id = ?', [cw.id]).then((x) => x?.n), 0, 'the hold revoked the grants');
  t.equal((await grantCw(1)).cow, undefined, 'no copy-on-write claims while a hold is set');
  await ask('disk.states', { name: 'cw', first: 3, count: 1, bits: STATE_NO_WRITE, set: false });
  t.equal((await grantCw(1)).cow, 'whole', 'and again once it is cleared');
  // A clone that copies partial writes: its agent may copy the rest of the segment itself.
  const cc = await ask<Disk>('disk.clone', { snapshot: 'cw-s', name: 'cw-c', partial: 'copy' });
  await ask('disk.attach', { name: 'cw-c', hostId: 'hc' });
  t.equal(((await hc.conn.request('disk.grant', { diskId: cc.id, want: 1, claims: [] })).result as CowGrant).cow, 'copy',
    'a --partial copy disk\'s grants serve partial copy-on-write claims too');
  await ask('disk.detach', { name: 'cw-c', hostId: 'hc' });
  // A copy-out clone joins the family: its writes move the other members' entries.
  await ask('disk.clone', { snapshot: 'cw-s', name: 'cw-k', cow: 'copy-out' });
  t.equal(await controller.store.db.get<{ n: number }>('SELECT COUNT(*) AS n FROM grants WHERE disk_id = ?', [cw.id]).then((x) => x?.n), 0, 'the copy-out clone revoked the family\'s grants');
  t.equal((await grantCw(1)).cow, undefined, 'no copy-on-write claims in a family with a copy-out member');
  await ask('disk.detach', { name: 'cw', hostId: 'hc' });
  for (const name of ['cw-k', 'cw-c', 'cw', 'cw-s']) await ask('disk.rm', { name });
  t.ok((await check()).ok, 'nothing leaked');
});
