// The migrator against a real store and real container files (no agent holds the disk): a fault still staging
// a segment on the old container when the migration starts must not be left behind, and the scan follows the
// stored chunks, so a huge thin disk with a few mapped segments migrates by what it holds.
import t from 'tap';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { AgentRegistry } from '../../src/controller/agents.js';
import { Attachments } from '../../src/controller/attachments.js';
import { Migrator, type MigrationProgress } from '../../src/controller/migrate.js';
import { SegmentIo } from '../../src/controller/segment-io.js';
import { Store, type Disk } from '../../src/controller/store.js';
import { CHUNK_ENTRIES } from '../../src/table/entry-codec.js';

const SEG = 64 * 1024;
const MB = 1 << 20;

async function setup(t: { teardown: (fn: () => unknown) => void }) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vdisk-migrate-'));
  const store = await Store.open(dir);
  const ids: Record<string, number> = {};
  for (const name of ['c1', 'c2']) {
    const file = path.join(dir, `${name}.img`);
    fs.writeFileSync(file, '');
    fs.truncateSync(file, 8 * MB);
    ids[name] = (await store.addContainer(name, file, 8 * MB)).id;
  }
  const att = new Attachments(store, new AgentRegistry(), () => {});
  const io = new SegmentIo(store);
  const migrator = new Migrator(store, att, io, () => {});
  t.teardown(async () => { io.close(); await store.close().catch(() => {}); fs.rmSync(dir, { recursive: true, force: true }); });
  return { store, att, migrator, ids, dir };
}

async function containersOf(store: Store, disk: Disk): Promise<Map<number, number>> {
  const out = new Map<number, number>();
  for (const e of await store.tables.getEntries(disk, 0, disk.segments)) {
    if (e.states === 0) out.set(e.container, (out.get(e.container) ?? 0) + 1);
  }
  return out;
}

/** Polls state another flow brings about (SQLite commits fsync, so this can take a while under load). */
const until = async (what: string, cond: () => boolean): Promise<void> => {
  for (let i = 0; i < 5000 && !cond(); i++) await new Promise((r) => setTimeout(r, 5));
  if (!cond()) throw new Error(`gave up waiting for ${what}`);
};

t.test('a fault staging on the old container when the migration starts is moved too', async (t) => {
  const { store, att, migrator, ids } = await setup(t);
  const disk = await store.createDisk({ name: 'd', size: 16 * SEG, segmentSize: SEG, container: 'c1' });
  await store.alloc.allocateSegment(disk, 0);
  // The fault's zeroing I/O (between its two transactions, under the disk's lock, as answerFault runs it)
  // stalls until the migration is observably waiting for the same lock.
  let entered = false;
  let release!: () => void;
  const gate = new Promise<void>((r) => { release = r; });
  const fault = att.withDisk(disk.id, () => store.alloc.allocateSegment(disk, 5, async (e) => {
    t.equal(e.container, ids.c1, 'the fault planned on c1, the preference before the migration');
    entered = true;
    await gate;
  }));
  await until('the fault to reserve its segment', () => entered);
  const progress: MigrationProgress[] = [];
  const job = migrator.migrate('d', 'c2', (p) => progress.push({ ...p }));
  await until('the migration to wait for the disk lock', () => att.locks.users(disk.id) === 2);
  t.same(await store.cow.migrations(), [{ diskId: disk.id, to: ids.c2 }], 'the migration is recorded before the fault commits');
  release();
  t.equal((await fault).container, ids.c1, 'the fault committed its c1 segment after the migration started');
  const done = await job;
  t.equal(done.moved, 2, 'both c1 segments moved, the one the fault staged included');
  t.same([...await containersOf(store, disk)], [[ids.c2, 2]], 'every mapped segment is on c2');
  t.equal((await store.diskInfo('d')).perContainer.c1, undefined, 'nothing of the disk is left on c1');
  t.ok(progress.some((p) => p.moved === 1), 'progress is reported per moved segment');
  t.same(progress.at(-1), { disk: 'd', to: 'c2', done: 16, total: 16, moved: 2 }, 'the last report covers the whole disk');
});

t.test('the scan follows stored chunks: a 64 Mi-segment thin disk with two mapped chunks', async (t) => {
  const { store, migrator, ids } = await setup(t);
  const segments = 64 * CHUNK_ENTRIES * CHUNK_ENTRIES;
  const disk = await store.createDisk({ name: 'big', size: segments * SEG, segmentSize: SEG, container: 'c1' });
  const far = segments - 3;
  await store.alloc.allocateSegment(disk, 7);
  await store.alloc.allocateSegment(disk, far);
  const progress: MigrationProgress[] = [];
  const done = await migrator.migrate('big', 'c2', (p) => progress.push({ ...p }));
  t.equal(done.moved, 2, 'both segments moved');
  const [a] = await store.tables.getEntries(disk, 7, 1);
  const [b] = await store.tables.getEntries(disk, far, 1);
  t.same([a.container, b.container], [ids.c2, ids.c2], 'both now on c2');
  // One report per moved segment and per stored chunk, and the final one: not one per segment of the disk.
  t.equal(progress.length, 5, `${progress.length} progress reports`);
  t.equal(progress.at(-1)?.done, segments, 'the last report covers the whole disk');
  t.same(await store.cow.migrations(), [], 'the job is finished');
});
