// Tables at the size limit, on a real SQLite store: one limit for every command (create refuses past it and
// says it), and info, check, migration and table loads cost what the table holds, not the disk's size, so
// the largest thin disk is as cheap to inspect as a small one. check also proves every mapping lies inside
// a container the store knows.
import t from 'tap';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { checkStore } from '../../src/controller/check.js';
import { Store } from '../../src/controller/store.js';
import { CHUNK_ENTRIES, ENTRY_BYTES, decodeEntry, encodeEntry } from '../../src/table/entry-codec.js';
import { MAX_SEGMENTS, MappingTable, STATE_ZERO, maxDiskSize } from '../../src/table/mapping-table.js';

const MB = 1 << 20;
const TB = 2 ** 40;

async function fresh(t: { teardown: (fn: () => unknown) => void }): Promise<Store> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vdisk-big-'));
  const store = await Store.open(dir);
  t.teardown(async () => { await store.close().catch(() => {}); fs.rmSync(dir, { recursive: true, force: true }); });
  await store.addContainer('c1', path.join(dir, 'c1.img'), TB);
  return store;
}

t.test('one size limit: 2^28 segments, said in the error; the agent table refuses past it too', async (t) => {
  const store = await fresh(t);
  t.equal(maxDiskSize(MB), 256 * TB, '256 TiB with 1 MiB segments');
  const max = await store.createDisk({ name: 'max', size: maxDiskSize(MB), segmentSize: MB });
  t.equal(max.segments, MAX_SEGMENTS);
  await t.rejects(store.createDisk({ name: 'over', size: maxDiskSize(MB) + MB, segmentSize: MB }),
    { code: 'EFBIG', message: /over the limit of 256T for 1M segments \(268435456 segments per disk\): use a larger segment size/ });
  await t.rejects(store.createDisk({ name: 'way-over', size: 4 * 1024 * TB, segmentSize: MB }), { code: 'EFBIG' });
  await t.rejects(store.disk('over'), { code: 'ENOENT' }, 'a refused create leaves no disk');
  const big = await store.createDisk({ name: 'big-seg', size: 4 * 1024 * TB, segmentSize: 64 * MB });
  t.equal(big.segments, 2 ** 26, '4 PiB is fine with 64 MiB segments');
  t.throws(() => new MappingTable(new SharedArrayBuffer(16), { segments: MAX_SEGMENTS + 1, segmentSize: MB }), /1\.\.268435456 entries/);
});

t.test('info, check and table reads of the largest thin disk cost what it holds', async (t) => {
  const store = await fresh(t);
  const disk = await store.createDisk({ name: 'max', size: maxDiskSize(MB), segmentSize: MB });
  const last = disk.segments - 1;
  const a = await store.alloc.allocateSegment(disk, 3);
  const b = await store.alloc.allocateSegment(disk, last);
  const info = await store.diskInfo('max');
  t.same(info.entriesByState, { mapped: 2, zero: MAX_SEGMENTS - 2, invalid: 0, error: 0, noWrite: 0 });
  t.same(info.perContainer, { c1: 2 * MB });
  const report = await checkStore(store);
  t.same(report.problems, [], 'check: consistent');
  t.equal(report.references, 2);
  // A table load's piece: the stored chunk at the far end, fill state around it.
  const piece = await store.tables.readRange(disk, last - 2, 3);
  t.equal(piece.length, 3 * ENTRY_BYTES);
  t.same([decodeEntry(piece, 0).states, decodeEntry(piece, 2)], [STATE_ZERO, b]);
  t.same(decodeEntry(await store.tables.readRange(disk, 0, CHUNK_ENTRIES + 1), 3), a, 'a piece across a chunk boundary');
  t.same(await store.tables.storedChunks(disk), [0, (MAX_SEGMENTS / CHUNK_ENTRIES) - 1], 'two chunks are stored, nothing else');
});

t.test('check reports a mapping outside its container or into an unknown one', async (t) => {
  const store = await fresh(t);
  const disk = await store.createDisk({ name: 'd', size: 16 * MB, segmentSize: MB });
  const e = await store.alloc.allocateSegment(disk, 0);
  t.same((await checkStore(store)).problems, []);
  // Damage the stored chunk directly, as a bug or a hand-edited database would.
  const chunk = await store.tables.chunk(disk, 0);
  encodeEntry(chunk, 1, { ...e, offset: TB }); // at the container's end: its last byte is past it
  encodeEntry(chunk, 2, { ...e, container: 77, offset: 5 * MB });
  await store.db.transaction(() => store.tables.putChunk(disk.id, 0, chunk));
  const problems = (await checkStore(store)).problems;
  t.match(problems, [/d\[1\] lies outside container c1/], 'outside the container');
  t.ok(problems.some((p) => /d\[2\] is mapped to container #77, which does not exist/.test(p)), 'an unknown container');
});
