// Controller store on a real SQLite file: containers, thin and thick disks, allocation and reuse, chunked
// tables across chunk boundaries, Error on container failure, refusal of data-losing removals, reopen.
import t from 'tap';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { SCHEMA_VERSION } from '../../src/controller/schema.js';
import { Store } from '../../src/controller/store.js';
import { CHUNK_ENTRIES, ENTRY_BYTES, decodeEntry } from '../../src/table/entry-codec.js';
import { STATE_ERROR, STATE_NO_WRITE, STATE_ZERO } from '../../src/table/mapping-table.js';

const MB = 1 << 20;
const GB = 1 << 30;

async function fresh(t: { teardown: (fn: () => unknown) => void }): Promise<{ store: Store; dir: string }> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vdisk-store-'));
  const store = await Store.open(dir);
  t.teardown(async () => { await store.close().catch(() => {}); fs.rmSync(dir, { recursive: true, force: true }); });
  return { store, dir };
}

t.test('a 1 TiB thin disk is created all-Zero and loads in full', async (t) => {
  const { store } = await fresh(t);
  await store.addContainer('c1', '/tmp/c1.img', 10 * GB);
  const disk = await store.createDisk({ name: 'big', size: 2 ** 40, segmentSize: MB });
  t.equal(disk.segments, 1048576);
  const table = await store.tables.readTable(disk);
  t.equal(table.length, 1048576 * ENTRY_BYTES);
  t.same(decodeEntry(table, 1048575), { states: STATE_ZERO, container: 0, offset: 0, alt: 0 });
  const info = await store.diskInfo('big');
  t.equal(info.entriesByState.zero, 1048576);
  t.equal(info.allocatedBytes, 0);
});

t.test('allocation: aligned, idempotent, counted, reused after rm, ENOSPC when full', async (t) => {
  const { store } = await fresh(t);
  store.quarantineMs = 0; // reuse at once (the quarantine has its own test in snapshot-store)
  await store.addContainer('small', '/tmp/s.img', 4 * MB);
  const disk = await store.createDisk({ name: 'd', size: 64 * MB, segmentSize: MB });
  const a = await store.alloc.allocateSegment(disk, 5);
  t.same(a, { states: 0, container: 1, offset: 0, alt: 0 });
  t.same(await store.alloc.allocateSegment(disk, 5), a, 'a second fault on the same segment gets the same entry');
  const b = await store.alloc.allocateSegment(disk, 6);
  t.equal(b.offset, MB);
  t.same((await store.tables.getEntries(disk, 4, 3)).map((e) => e.states), [STATE_ZERO, 0, 0]);
  const info = await store.diskInfo('d');
  t.equal(info.allocatedBytes, 2 * MB);
  t.same(info.perContainer, { small: 2 * MB });
  t.equal((await store.container('small')).usedBytes, 2 * MB);
  await store.alloc.allocateSegment(disk, 7);
  await store.alloc.allocateSegment(disk, 8);
  await t.rejects(store.alloc.allocateSegment(disk, 9), { code: 'ENOSPC' }, 'container full');
  t.equal((await store.tables.getEntries(disk, 9, 1))[0].states, STATE_ZERO, 'a failed allocation leaves the entry Zero');
  await t.rejects(store.removeContainer('small'), { code: 'EBUSY' });
  await store.removeDisk('d');
  const again = await store.createDisk({ name: 'e', size: 8 * MB, segmentSize: MB });
  const offsets = [];
  for (let i = 0; i < 4; i++) offsets.push((await store.alloc.allocateSegment(again, i)).offset);
  t.same(offsets.sort((x, y) => x - y), [0, MB, 2 * MB, 3 * MB], 'freed segments are reused');
});

t.test('thick disks allocate everything at creation; mixed segment sizes stay aligned', async (t) => {
  const { store } = await fresh(t);
  await store.addContainer('c', '/tmp/c.img', 64 * MB);
  const small = await store.createDisk({ name: 'small', size: MB, segmentSize: 64 * 1024 });
  await store.alloc.allocateSegment(small, 0);
  const zeroed: number[][] = [];
  const zero = async (container: number, offset: number, length: number) => { zeroed.push([container, offset, length]); };
  await t.rejects(store.createDisk({ name: 'thick', size: 8 * MB, segmentSize: 4 * MB, thick: true }), { code: 'EINVAL' }, 'never without zeroing');
  const thick = await store.createDisk({ name: 'thick', size: 8 * MB, segmentSize: 4 * MB, thick: true, zero });
  const entries = await store.tables.getEntries(thick, 0, 2);
  t.same(entries.map((e) => e.offset), [4 * MB, 8 * MB], 'aligned to the 4 MiB segment size after a 64 KiB one');
  t.same(zeroed, [[entries[0].container, 4 * MB, 8 * MB]], 'both segments zeroed, as one run, before they were mapped');
  t.equal((await store.diskInfo('thick')).entriesByState.mapped, 2);
  await t.rejects(store.createDisk({ name: 'toobig', size: 128 * MB, segmentSize: MB, thick: true, zero }), { code: 'ENOSPC' });
  await t.rejects(store.disk('toobig'), { code: 'ENOENT' }, 'a failed thick create leaves nothing behind');
});

t.test('set/get entries across a chunk boundary; range and name checks', async (t) => {
  const { store } = await fresh(t);
  await store.addContainer('c', '/tmp/c.img', GB);
  const disk = await store.createDisk({ name: 'd', size: 4 * GB, segmentSize: MB });
  const first = CHUNK_ENTRIES - 3;
  const entries = Array.from({ length: 6 }, (_, k) => ({ states: k % 2 ? STATE_NO_WRITE : 0, container: 1, offset: k * MB, alt: 0 }));
  await store.tables.setEntries(disk, first, entries);
  t.same(await store.tables.getEntries(disk, first, 6), entries);
  t.equal((await store.tables.getEntries(disk, first - 1, 1))[0].states, STATE_ZERO);
  const table = await store.tables.readTable(disk);
  t.same(decodeEntry(table, CHUNK_ENTRIES + 2), entries[5]);
  await t.rejects(store.tables.getEntries(disk, 4095, 2), { code: 'ERANGE' });
  await t.rejects(store.tables.setEntries(disk, -1, entries), { code: 'ERANGE' });
  await t.rejects(store.createDisk({ name: 'bad name', size: MB, segmentSize: MB }), { code: 'EINVAL' });
  await t.rejects(store.createDisk({ name: 'odd', size: 1000, segmentSize: MB }), { code: 'EINVAL' });
  await t.rejects(store.createDisk({ name: 'd', size: MB, segmentSize: MB }), { code: 'EEXIST' });
  await t.rejects(store.addContainer('c', '/x', GB), { code: 'EEXIST' });
  await t.rejects(store.createDisk({ name: 'seg', size: MB, segmentSize: 3 * MB }), { code: 'EINVAL' });
});

t.test('a failed container turns exactly its mapped entries to Error', async (t) => {
  const { store } = await fresh(t);
  await store.addContainer('a', '/tmp/a.img', GB);
  await store.addContainer('b', '/tmp/b.img', GB);
  const da = await store.createDisk({ name: 'da', size: 16 * MB, segmentSize: MB, container: 'a' });
  const db = await store.createDisk({ name: 'db', size: 16 * MB, segmentSize: MB, container: 'b' });
  await store.alloc.allocateSegment(da, 1);
  await store.alloc.allocateSegment(da, 3);
  await store.alloc.allocateSegment(db, 1);
  const touched = await store.failContainer('a');
  t.same([...touched], [[da.id, [1, 3]]]);
  t.same((await store.tables.getEntries(da, 0, 4)).map((e) => e.states), [STATE_ZERO, STATE_ERROR, STATE_ZERO, STATE_ERROR]);
  t.equal((await store.tables.getEntries(db, 1, 1))[0].states, 0, 'the other container is untouched');
  t.ok((await store.container('a')).failed);
  await t.rejects(store.alloc.allocateSegment(da, 2), { code: 'ENOSPC' }, 'a failed container allocates nothing');
});

t.test('everything committed survives a reopen', async (t) => {
  const { store, dir } = await fresh(t);
  await store.addContainer('c', '/tmp/c.img', GB);
  const disk = await store.createDisk({ name: 'keep', size: 32 * MB, segmentSize: MB });
  const e = await store.alloc.allocateSegment(disk, 17);
  await store.close();
  const again = await Store.open(dir);
  t.teardown(() => again.close());
  const d2 = await again.disk('keep');
  t.same((await again.tables.getEntries(d2, 17, 1))[0], e);
  t.equal((await again.listContainers()).length, 1);
});

t.test('schema 1 databases migrate to the current schema; agents keep their lease across controller restarts', async (t) => {
  const { store, dir } = await fresh(t);
  const disk = await store.createDisk({ name: 'd', size: 8 * MB, segmentSize: MB });
  await store.putAttachment(disk.id, 'h1', 3);
  // Make it a schema-1 database again (before the lease column existed).
  await store.db.exec('ALTER TABLE agents DROP COLUMN lease_ms; ALTER TABLE disks DROP COLUMN read_only; ALTER TABLE disks DROP COLUMN parent_id; DROP TABLE migrations; ALTER TABLE disks DROP COLUMN cow_mode; ALTER TABLE disks DROP COLUMN family_id; ALTER TABLE disks DROP COLUMN partial_mode; DROP TABLE alternates; DROP TABLE copyouts; ' +
    'DROP INDEX containers_identity; ALTER TABLE containers DROP COLUMN identity; ALTER TABLE allocations DROP COLUMN pending; ALTER TABLE free_extents DROP COLUMN reusable_at; DROP TABLE counters; DROP TABLE holds; ' +
    'DROP TABLE hosts; DROP INDEX containers_uuid; ALTER TABLE containers DROP COLUMN uuid; DROP TABLE container_paths; DROP TABLE label_intents; ALTER TABLE containers DROP COLUMN zeroed_unit; DROP TABLE grants; PRAGMA user_version = 1');
  await store.close();
  const again = await Store.open(dir);
  t.teardown(() => again.close());
  t.equal((await again.db.get<{ user_version: number }>('PRAGMA user_version'))?.user_version, SCHEMA_VERSION, `migrated to version ${SCHEMA_VERSION}`);
  t.equal((await again.disk('d')).readOnly, false, 'disks from before snapshots are writable');
  t.same(await again.attachments(), [{ diskId: disk.id, disk: 'd', hostId: 'h1', devId: 3 }], 'attachments kept');
  t.same([...(await again.agentLeases())], [], 'no lease known yet');
  await again.touchAgent('h1', 30_000);
  t.same([...(await again.agentLeases())], [['h1', 30_000]], 'the registered lease is recorded');
});

t.test('after a migration starts, faults allocate on the new container even through an older Disk object', async (t) => {
  const { store } = await fresh(t);
  await store.addContainer('c1', '/tmp/c1.img', 64 * MB);
  await store.addContainer('c2', '/tmp/c2.img', 64 * MB);
  const disk = await store.createDisk({ name: 'd', size: 16 * MB, segmentSize: MB, container: 'c1' });
  t.equal((await store.alloc.allocateSegment(disk, 0)).container, 1, 'before: the preferred container c1');
  const { to } = await store.cow.startMigration('d', 'c2');
  // `disk` still says c1, as the fault handler's copy did when the migration left segments behind on c1.
  t.equal(disk.containerId, 1);
  t.equal((await store.alloc.allocateSegment(disk, 1)).container, to.id, 'a fault after the start allocates on c2');
});
