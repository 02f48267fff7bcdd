// Snapshots, clones and copy-on-write in the controller store, and `check`'s invariants: sharing sets No-write
// and counts references, a write to a shared segment gets a private copy, removals return exactly the
// unshared segments, chains stay flat, and check notices a broken reference count.
import t from 'tap';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { checkStore } from '../../src/controller/check.js';
import { Store } from '../../src/controller/store.js';
import { references } from '../support/references.js';
import { STATE_NO_WRITE, STATE_ZERO, type Entry } from '../../src/table/mapping-table.js';

const MB = 1 << 20;

async function setup(t: { teardown: (fn: () => unknown) => void }) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vdisk-snap-'));
  const store = await Store.open(dir);
  t.teardown(async () => { await store.close(); fs.rmSync(dir, { recursive: true, force: true }); });
  await store.addContainer('c', '/tmp/never-opened.img', 256 * MB);
  const d = await store.createDisk({ name: 'd', size: 16 * MB, segmentSize: MB });
  for (const seg of [0, 1, 2, 3]) await store.alloc.allocateSegment(d, seg);
  return { store, d };
}

const refcount = references;

t.test('snapshot, copy-on-write, clone, removal', async (t) => {
  const { store, d } = await setup(t);
  const before = await store.tables.getEntries(d, 0, 4);
  const s = await store.cow.snapshot('d', 's1');
  t.ok(s.readOnly, 'a snapshot is read-only');
  t.equal(s.parent, d.id, 'its parent is the origin');
  const se = await store.tables.getEntries(s, 0, 16);
  const de = await store.tables.getEntries(d, 0, 16);
  for (let i = 0; i < 4; i++) {
    t.same({ ...se[i], states: 0 }, before[i], `segment ${i}: the snapshot maps the same storage`);
    t.ok(se[i].states & STATE_NO_WRITE && de[i].states & STATE_NO_WRITE, `segment ${i}: No-write on both sides`);
    t.equal(await refcount(store, before[i]), 2, `segment ${i}: two references`);
  }
  t.same(se.slice(4), de.slice(4), 'unwritten segments stay Zero on both');
  t.ok((await checkStore(store)).ok, 'check: consistent after the snapshot');

  const copies: Array<[Entry, Entry]> = [];
  const copy = async (from: Entry, to: Entry) => { copies.push([from, to]); };
  const r = await store.cow.copyOnWrite(d, 1, copy);
  t.ok(r.remapped, 'a write to a shared segment is redirected');
  t.equal(copies.length, 1, 'after one copy');
  t.same(copies[0][0], se[1], 'from the shared segment');
  t.equal(r.entry.states, 0, 'the new entry is writable');
  t.equal(await refcount(store, before[1]), 1, 'the old segment is now the snapshot\'s alone');
  t.equal(await refcount(store, r.entry), 1, 'the new one the disk\'s');
  t.same((await store.tables.getEntries(s, 1, 1))[0], se[1], 'the snapshot still maps the old segment');
  t.notOk((await store.cow.copyOnWrite(d, 1, copy)).remapped, 'a second write finds a private segment');
  t.equal(copies.length, 1, 'and copies nothing');
  await t.rejects(store.cow.copyOnWrite(s, 0, copy), { code: 'EROFS' }, 'a snapshot is never written');
  const info = await store.diskInfo('d');
  t.same([info.exclusiveBytes, info.sharedBytes], [MB, 3 * MB], 'info: 1 MiB exclusive (the copy), 3 MiB shared with the snapshot');
  t.equal(info.freeBytes, 251 * MB, 'info: room left for 251 more segments');

  await t.rejects(store.cow.clone('d', 'x'), { code: 'EINVAL' }, 'only snapshots are cloned');
  const c = await store.cow.clone('s1', 'c1');
  t.notOk(c.readOnly, 'a clone is writable');
  t.equal(await refcount(store, before[0]), 3, 'segment 0: origin, snapshot and clone');
  t.equal(await refcount(store, before[1]), 2, 'segment 1 (origin rewrote it): snapshot and clone');
  t.ok((await store.cow.copyOnWrite(c, 0, copy)).remapped, 'the clone copies on write too');
  t.equal(await refcount(store, before[0]), 2);
  t.ok((await checkStore(store)).ok, 'check: consistent after clone writes');

  const used = async () => (await store.listContainers())[0].usedBytes / MB;
  t.equal(await used(), 6, '4 original + 2 copies');
  await store.removeDisk('d');
  t.equal(await used(), 5, 'removing the origin frees only its private copy');
  await store.removeDisk('s1');
  t.equal(await used(), 4, 'removing the snapshot frees the segment only it still held');
  t.equal((await store.disk('c1')).parent, null, 'the clone outlives its snapshot');
  t.ok((await checkStore(store)).ok, 'check: consistent after removals');
  await store.removeDisk('c1');
  t.equal(await used(), 0, 'removing the last sharer frees everything');
  t.same((await checkStore(store)).problems, [], 'check: consistent when empty');
});

t.test('chains of 10 snapshots and clones stay flat', async (t) => {
  const { store } = await setup(t);
  let name = 'd';
  for (let i = 0; i < 10; i++) {
    await store.cow.snapshot(name, `s${i}`);
    await store.cow.clone(`s${i}`, `c${i}`);
    const c = await store.disk(`c${i}`);
    await store.cow.copyOnWrite(c, i % 4, async () => {});
    name = `c${i}`;
  }
  const last = await store.disk('c9');
  const e = await store.tables.getEntries(last, 0, 4);
  t.equal(e.length, 4, 'the deepest clone has its own full table: lookups do not walk the chain');
  const report = await checkStore(store);
  t.ok(report.ok, `check: consistent (${report.references} references to ${report.allocations} segments)`);
  t.equal(report.disks, 21);
});

t.test('check reports broken invariants', async (t) => {
  const { store, d } = await setup(t);
  const [e] = await store.tables.getEntries(d, 0, 1);
  await store.cow.snapshot('d', 's');
  await store.tables.setEntries(d, 0, [{ ...e, states: 0 }]); // the origin may write a segment the snapshot shares
  await store.db.run('INSERT INTO allocations (container_id, unit, units, refcount) VALUES (?, 1000, 16, 1)', [e.container]);
  const r = await checkStore(store);
  t.notOk(r.ok);
  t.match(r.problems.join('\n'), /is shared 2 ways but d\[0\] may write it/, 'a writable shared segment');
  t.match(r.problems.join('\n'), /allocated but no table references it/, 'a leaked segment');
});

t.test('out of space: info says so, and a new container makes room again', async (t) => {
  const { store } = await setup(t);
  const full = await store.createDisk({ name: 'full', size: 512 * MB, segmentSize: MB });
  for (let i = 0; i < 252; i++) await store.alloc.allocateSegment(full, i);
  t.equal((await store.diskInfo('full')).freeBytes, 0, 'no room left');
  await t.rejects(store.alloc.allocateSegment(full, 300), { code: 'ENOSPC' }, 'the next allocation fails with ENOSPC');
  await store.addContainer('more', '/tmp/never-opened-2.img', 8 * MB);
  t.equal((await store.diskInfo('full')).freeBytes, 8 * MB, 'a new container brings room');
  t.ok(await store.alloc.allocateSegment(full, 300), 'and allocations proceed');
});

t.test('reclaiming a whole segment frees it only when nobody else shares it', async (t) => {
  const { store, d } = await setup(t);
  const used = async () => (await store.listContainers())[0].usedBytes / MB;
  const [e0] = await store.tables.getEntries(d, 0, 1);
  t.equal((await store.cow.reclaimSegment(d, 0)).states, STATE_ZERO, 'the entry turns Zero');
  t.equal(await used(), 3, 'an unshared segment is freed');
  await store.cow.snapshot('d', 's');
  const [e1] = await store.tables.getEntries(d, 1, 1);
  await store.cow.reclaimSegment(d, 1);
  t.equal(await used(), 3, 'a shared one is not');
  t.equal(await refcount(store, e1), 1, 'it just loses the origin\'s reference');
  t.same({ ...(await store.tables.getEntries(await store.disk('s'), 1, 1))[0], states: 0 }, { ...e1, states: 0 }, 'the snapshot still maps it');
  await store.removeDisk('s');
  t.equal(await used(), 2, 'removing the snapshot frees it');
  const fresh = await store.alloc.allocateSegment(d, 5);
  t.notOk(fresh.offset === e0.offset || fresh.offset === e1.offset, 'freed segments are not handed out at once (in-flight reads may still use them)');
  store.quarantineMs = 0;
  await store.cow.reclaimSegment(d, 5);
  const again = await store.alloc.allocateSegment(d, 6);
  t.same([again.container, again.offset], [fresh.container, fresh.offset], 'out of quarantine, freed space is reused');
  t.ok((await checkStore(store)).ok, 'check: consistent');
});

t.test('migration moves segments one transaction at a time and is resumable', async (t) => {
  const { store, d } = await setup(t);
  await store.addContainer('fast', '/tmp/never-opened-3.img', 64 * MB);
  await store.cow.snapshot('d', 's');
  const { disk, to } = await store.cow.startMigration('d', 'fast');
  t.equal(disk.containerId, to.id, 'new allocations prefer the target');
  t.same(await store.cow.migrations(), [{ diskId: d.id, to: to.id }], 'the job is recorded');
  await t.rejects(store.cow.startMigration('s', 'fast'), { code: 'EROFS' }, 'a snapshot does not migrate on its own');
  const copies: Entry[] = [];
  for (let i = 0; i < d.segments; i++) await store.cow.migrateSegment(disk, i, to.id, async (_from, dst) => { copies.push(dst); });
  t.equal(copies.length, 4, 'the 4 mapped segments were copied (Zero ones need nothing)');
  const e = await store.tables.getEntries(disk, 0, 4);
  t.ok(e.every((x) => x.container === to.id && x.states === 0), 'all on the target, writable (the copies are private)');
  t.equal(await store.cow.migrateSegment(disk, 0, to.id, async () => { t.fail('no second copy'); }), null, 'moving again is a no-op');
  const info = await store.diskInfo('d');
  t.same(info.perContainer, { fast: 4 * MB }, 'info: all on fast');
  t.same((await store.diskInfo('s')).perContainer, { c: 4 * MB }, 'the snapshot keeps the originals');
  await store.cow.finishMigration(d.id);
  t.same(await store.cow.migrations(), [], 'job done');
  t.ok((await checkStore(store)).ok, 'check: consistent');
});
