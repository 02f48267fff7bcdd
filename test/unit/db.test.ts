// The controller database's statement discipline on a real SQLite file: reads outside a transaction see
// committed data only, a write outside a transaction never lands in another request's open one, and a
// read racing a copy-out in the store sees the committed table, never the remap that may still roll back;
// snapshot() reads one state across commits, and vdisk check uses it.
import t from 'tap';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { checkStore } from '../../src/controller/check.js';
import { Db } from '../../src/controller/db.js';
import { Store, type Container, type Disk } from '../../src/controller/store.js';
import { copyOut } from '../../src/controller/copy-out.js';
import { STATE_NO_WRITE } from '../../src/table/mapping-table.js';

const MB = 1 << 20;

function tmpdir(t: { teardown: (fn: () => unknown) => void }): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vdisk-db-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** A promise and its resolver: the test decides when a transaction may go on. */
function gate(): { wait: Promise<void>; open: () => void } {
  let open = () => {};
  const wait = new Promise<void>((resolve) => { open = resolve; });
  return { wait, open };
}

t.test('a read outside a transaction sees neither an open transaction nor one that rolls back', async (t) => {
  const db = await Db.open(path.join(tmpdir(t), 'x.db'));
  t.teardown(() => db.close());
  await db.run('CREATE TABLE kv (k TEXT PRIMARY KEY, v INTEGER)');
  await db.run("INSERT INTO kv VALUES ('a', 1)");
  const g = gate();
  const written = gate();
  const tx = db.transaction(async () => {
    await db.run("UPDATE kv SET v = 2 WHERE k = 'a'");
    t.equal((await db.get<{ v: number }>("SELECT v FROM kv WHERE k = 'a'"))?.v, 2, 'the transaction reads its own write');
    written.open();
    await g.wait;
    throw new Error('roll back');
  });
  await written.wait;
  t.equal((await db.get<{ v: number }>("SELECT v FROM kv WHERE k = 'a'"))?.v, 1, 'outside: the committed value while the write is open');
  t.same(await db.all("SELECT v FROM kv"), [{ v: 1 }], 'all() too');
  g.open();
  await t.rejects(tx, /roll back/);
  t.equal((await db.get<{ v: number }>("SELECT v FROM kv WHERE k = 'a'"))?.v, 1, 'and after the rollback');
});

t.test('a write outside a transaction waits for the open one and is not rolled back with it', async (t) => {
  const db = await Db.open(path.join(tmpdir(t), 'x.db'));
  t.teardown(() => db.close());
  await db.run('CREATE TABLE kv (k TEXT PRIMARY KEY, v INTEGER)');
  const g = gate();
  const started = gate();
  const tx = db.transaction(async () => {
    await db.run("INSERT INTO kv VALUES ('inside', 1)");
    started.open();
    await g.wait;
    throw new Error('roll back');
  });
  await started.wait;
  const outside = db.run("INSERT INTO kv VALUES ('outside', 2)");
  g.open();
  await t.rejects(tx, /roll back/);
  await outside;
  t.same(await db.all('SELECT k FROM kv ORDER BY k'), [{ k: 'outside' }], 'only the outside write survives');
});

t.test('a transaction opened inside a transaction joins it', async (t) => {
  const db = await Db.open(path.join(tmpdir(t), 'x.db'));
  t.teardown(() => db.close());
  await db.run('CREATE TABLE kv (k TEXT PRIMARY KEY, v INTEGER)');
  await t.rejects(db.transaction(async () => {
    await db.transaction(async () => { await db.run("INSERT INTO kv VALUES ('nested', 1)"); });
    throw new Error('outer fails');
  }), /outer fails/);
  t.same(await db.all('SELECT * FROM kv'), [], 'the nested write rolled back with the outer transaction');
});

t.test('during a copy-out, another request reads the sharer\'s committed entry, not the remap', async (t) => {
  const dir = tmpdir(t);
  const store = await Store.open(dir);
  t.teardown(() => store.close());
  await store.addContainer('c1', path.join(dir, 'c1.img'), 64 * MB);
  const origin = await store.createDisk({ name: 'd', size: 4 * MB, segmentSize: MB, cow: 'copy-out' });
  await store.alloc.allocateSegment(origin, 0);
  const snap = await store.cow.snapshot('d', 's');
  const [before] = await store.tables.getEntries(snap, 0, 1);
  const copying = gate();
  const release = gate();
  const job = copyOut(store, await store.disk('d'), 0, async () => {
    copying.open();
    await release.wait;
    throw new Error('container write failed');
  });
  await copying.wait;
  const [during] = await store.tables.getEntries(snap, 0, 1);
  t.same(during, before, 'the snapshot still maps the shared segment while the copy-out is open');
  release.open();
  await t.rejects(job, /container write failed/);
  const [after] = await store.tables.getEntries(snap, 0, 1);
  t.same(after, before, 'nothing of the failed copy-out remains');
  t.ok(after.states & STATE_NO_WRITE, 'still shared No-write');
});

t.test('a lazy transaction commits without its own fsync; every other one stays synchronous = FULL', async (t) => {
  const db = await Db.open(path.join(tmpdir(t), 'l.db'));
  t.teardown(() => db.close());
  await db.exec('CREATE TABLE x (v INTEGER)');
  const level = () => db.get<{ synchronous: number }>('PRAGMA synchronous').then((r) => r?.synchronous);
  t.equal(await db.transaction(level), 2, 'FULL by default');
  t.equal(await db.transaction(async () => { await db.run('INSERT INTO x VALUES (1)'); return level(); }, { durable: false }), 1, 'NORMAL inside a lazy one');
  t.equal(await db.transaction(level), 2, 'FULL again after it');
  await t.rejects(db.transaction(async () => { throw new Error('boom'); }, { durable: false }), /boom/);
  t.equal(await db.transaction(level), 2, 'and after a lazy one that rolled back');
  t.same(await db.all('SELECT v FROM x'), [{ v: 1 }], 'the lazy commit is there');
});

t.test('sync(): one durable commit covers the lazy ones before it, shared by concurrent callers; none when nothing is lazy', async (t) => {
  const file = path.join(tmpdir(t), 's.db');
  const first = await Db.open(file);
  await first.exec('CREATE TABLE x (v INTEGER); CREATE TABLE counters (name TEXT PRIMARY KEY, next INTEGER NOT NULL)');
  await first.close();
  const db = await Db.open(file);
  t.teardown(() => db.close());
  t.equal(db.lazyPending, 1, 'at open, a previous process\'s lazy commits may be in the WAL: the first sync commits');
  await db.sync();
  t.same([db.lazyPending, db.stats.syncs], [0, 1], 'it did');
  await db.sync();
  t.equal(db.stats.syncs, 1, 'nothing lazy since: no commit');
  for (let i = 0; i < 3; i++) await db.transaction(() => db.run('INSERT INTO x VALUES (?)', [i]), { durable: false });
  t.same([db.lazyPending, db.stats.lazyCommits], [3, 3], 'three lazy commits wait for a sync');
  const gateTx = gate();
  const busy = db.transaction(() => gateTx.wait); // the writer is busy: the syncs queue behind it
  const all = Promise.all([db.sync(), db.sync(), db.sync()]);
  gateTx.open();
  await busy;
  await all;
  t.same([db.lazyPending, db.stats.syncs], [0, 2], 'three concurrent callers shared one durable commit');
  await db.transaction(() => db.run('INSERT INTO x VALUES (9)'), { durable: false });
  await db.transaction(() => db.run('INSERT INTO x VALUES (10)'));
  t.equal(db.lazyPending, 0, 'a durable commit covers the lazy ones before it');
  await db.sync();
  t.equal(db.stats.syncs, 2, 'so no sync commit was needed');
});

t.test('snapshot(): every read in it sees the database as of its first read, whatever commits meanwhile', async (t) => {
  const db = await Db.open(path.join(tmpdir(t), 'snap.db'));
  t.teardown(() => db.close());
  await db.run('CREATE TABLE kv (k TEXT PRIMARY KEY, v INTEGER)');
  await db.run("INSERT INTO kv VALUES ('a', 1)");
  const seen = await db.snapshot(async () => {
    const first = (await db.get<{ v: number }>("SELECT v FROM kv WHERE k = 'a'"))?.v;
    await db.run("UPDATE kv SET v = 2 WHERE k = 'a'"); // commits (its own transaction, on the writer)
    await db.run("INSERT INTO kv VALUES ('b', 3)");
    const later = (await db.get<{ v: number }>("SELECT v FROM kv WHERE k = 'a'"))?.v;
    const rows = (await db.all<{ k: string }>('SELECT k FROM kv')).length;
    return { first, later, rows };
  });
  t.same(seen, { first: 1, later: 1, rows: 1 }, 'inside: the value and the rows of the first read');
  t.equal((await db.get<{ v: number }>("SELECT v FROM kv WHERE k = 'a'"))?.v, 2, 'outside: the committed value');
});

t.test('vdisk check during a commit that maps a new segment reports no false leak', async (t) => {
  const dir = tmpdir(t);
  const store = await Store.open(dir);
  t.teardown(() => store.close());
  await store.addContainer('c', path.join(dir, 'c.img'), 64 * MB);
  const a = await store.createDisk({ name: 'a', size: 16 * 64 * 1024, segmentSize: 64 * 1024 });
  const b = await store.createDisk({ name: 'b', size: 4096 * 64 * 1024, segmentSize: 64 * 1024 });
  for (const i of [0, 1024, 2048, 3072]) await store.alloc.allocateSegment(b, i); // 4 stored chunks: 4 turns of check
  await store.alloc.allocateSegment(a, 0);
  let committed = false;
  const report = await checkStore(store, async (done) => {
    // Once a's table has been read (b's scan is under way), a fault maps a's segment 5 and commits.
    if (done > a.segments && !committed) {
      await store.alloc.allocateSegment(a, 5);
      committed = true;
    }
  });
  t.ok(committed, 'the allocation committed while check ran');
  t.same(report.problems, [], 'check read one snapshot: no "allocated but no table references it"');
  t.same((await checkStore(store)).problems, [], 'and a check after it sees the new mapping, consistent too');
  t.equal((await store.diskInfo('a')).allocatedBytes, 2 * 64 * 1024);
});

t.test('prepared statements: reused per connection, a half-read result never pins an old snapshot', async (t) => {
  const db = await Db.open(path.join(tmpdir(t), 'x.db'));
  t.teardown(() => db.close());
  await db.run('CREATE TABLE kv (k TEXT PRIMARY KEY, v INTEGER)');
  await db.run("INSERT INTO kv VALUES ('a', 1), ('b', 2), ('c', 3)");
  // get() of a query with more rows than one: a statement left after its first row would keep the reader's
  // read transaction open, and every later read on the reader would see the database as of then.
  t.equal((await db.get<{ v: number }>('SELECT v FROM kv ORDER BY k'))?.v, 1, 'get() returns the first row');
  await db.run("UPDATE kv SET v = 10 WHERE k = 'a'");
  t.equal((await db.get<{ v: number }>("SELECT v FROM kv WHERE k = 'a'"))?.v, 10, 'a read after the commit sees it');
  t.equal((await db.get<{ v: number }>('SELECT v FROM kv ORDER BY k'))?.v, 10, 'the same cached statement sees it too');
  const reads = await Promise.all([1, 2, 3, 1, 2, 3].map((n) => db.get<{ k: string }>('SELECT k FROM kv WHERE v = ?', [n === 1 ? 10 : n])));
  t.same(reads.map((r) => r?.k), ['a', 'b', 'c', 'a', 'b', 'c'], 'interleaved callers of one statement each get their own row');
  t.equal(db.preparedStatements(), 6, 'one prepared statement per SQL text and connection (3 reader, 3 writer)');
  await t.rejects(db.get('SELECT nope FROM kv'), /no such column/, 'a statement that does not prepare fails its call');
  await t.rejects(db.get('SELECT nope FROM kv'), /no such column/, 'and again the next time: a failed prepare is not kept');
  t.equal(db.preparedStatements(), 6, 'nothing cached for it');
});

t.test('generation(): changes after a transaction that wrote the table ends, never before its commit', async (t) => {
  const db = await Db.open(path.join(tmpdir(t), 'x.db'));
  t.teardown(() => db.close());
  await db.run('CREATE TABLE disks (id INTEGER PRIMARY KEY, v INTEGER)');
  await db.run('CREATE TABLE other (id INTEGER PRIMARY KEY)');
  const g0 = db.generation('disks');
  await db.run('INSERT INTO other VALUES (1)');
  t.equal(db.generation('disks'), g0, 'a write to another table leaves it');
  const inside = gate();
  const go = gate();
  const tx = db.transaction(async () => {
    await db.run('INSERT INTO disks VALUES (1, 1)');
    inside.open();
    await go.wait;
  });
  await inside.wait;
  t.equal(db.generation('disks'), g0, 'unchanged while the writing transaction is open');
  go.open();
  await tx;
  const g1 = db.generation('disks');
  t.not(g1, g0, 'changed once it committed');
  await t.rejects(db.transaction(async () => {
    await db.run('UPDATE disks SET v = 2');
    throw new Error('abandoned');
  }), /abandoned/);
  t.not(db.generation('disks'), g1, 'changed after a rollback too (conservative)');
});

/** A store with containers c1 and c2 and a 4 MiB disk d on c1: a change of d's container is a write to disks. */
async function storeWithTwoContainers(t: { teardown: (fn: () => unknown) => void }): Promise<{ store: Store; d: Disk; c2: Container }> {
  const dir = tmpdir(t);
  const store = await Store.open(dir);
  t.teardown(() => store.close());
  await store.addContainer('c1', path.join(dir, 'c1.img'), 64 * MB);
  await store.addContainer('c2', path.join(dir, 'c2.img'), 64 * MB);
  const d = await store.createDisk({ name: 'd', size: 4 * MB, segmentSize: MB, container: 'c1' });
  const c2 = (await store.listContainers()).find((c) => c.name === 'c2')!;
  return { store, d, c2 };
}

t.test('diskById answers from a cache that a write to disks invalidates, and reads a transaction\'s own view', async (t) => {
  const { store, d, c2 } = await storeWithTwoContainers(t);
  t.equal((await store.diskById(d.id))?.containerId, d.containerId, 'first read');
  const reads = store.db.stats.readerStatements;
  const again = await store.diskById(d.id);
  t.equal(store.db.stats.readerStatements, reads, 'the second read is served without a statement');
  again!.name = 'mutated';
  t.equal((await store.diskById(d.id))?.name, 'd', 'a caller changing its copy does not change the cache');
  await t.rejects(store.db.transaction(async () => {
    await store.db.run('UPDATE disks SET container_id = ? WHERE id = ?', [c2.id, d.id]);
    t.equal((await store.diskById(d.id))?.containerId, c2.id, 'inside the transaction: its own write');
    throw new Error('rolled back');
  }), /rolled back/);
  t.equal((await store.diskById(d.id))?.containerId, d.containerId, 'after the rollback: the committed row');
  await store.db.run('UPDATE disks SET container_id = ? WHERE id = ?', [c2.id, d.id]);
  t.equal((await store.diskById(d.id))?.containerId, c2.id, 'after a commit: the new row, not the cached one');
  await store.removeDisk('d');
  t.equal(await store.diskById(d.id), undefined, 'a removed disk is gone');
});

t.test('a read inside Db.snapshot() does not fill the caches: its rows may be older than their generation', async (t) => {
  const { store, d, c2 } = await storeWithTwoContainers(t);
  await store.db.snapshot(async () => {
    await store.db.get('SELECT count(*) AS n FROM disks'); // the snapshot's read transaction starts here
    await store.db.run('UPDATE disks SET container_id = ? WHERE id = ?', [c2.id, d.id]); // committed outside it
    t.equal((await store.diskById(d.id))?.containerId, d.containerId, 'inside: the row as of the snapshot');
  });
  t.equal((await store.diskById(d.id))?.containerId, c2.id, 'after it: the committed row, not the snapshot\'s');
});

t.test('a disk\'s holders come from a cache that a write to attachments or disks invalidates', async (t) => {
  const dir = tmpdir(t);
  const store = await Store.open(dir);
  t.teardown(() => store.close());
  const d = await store.createDisk({ name: 'd', size: 4 * MB, segmentSize: MB });
  await store.putAttachment(d.id, 'h1', 3);
  const holders = async () => (await store.attachments({ diskId: d.id })).map((a) => `${a.disk}@${a.hostId}:${a.devId}`);
  t.same(await holders(), ['d@h1:3'], 'first read');
  const reads = store.db.stats.readerStatements;
  const again = await store.attachments({ diskId: d.id });
  t.equal(store.db.stats.readerStatements, reads, 'the second read is served without a statement');
  again[0]!.hostId = 'mutated';
  t.same(await holders(), ['d@h1:3'], 'a caller changing its copy does not change the cache');
  await store.putAttachment(d.id, 'h2', null);
  t.same(await holders(), ['d@h1:3', 'd@h2:null'], 'an attach is seen at once');
  await store.db.run('UPDATE disks SET name = ? WHERE id = ?', ['e', d.id]);
  t.same(await holders(), ['e@h1:3', 'e@h2:null'], 'so is a write to disks (the name comes from there)');
  await store.db.run('DELETE FROM attachments WHERE host_id = ?', ['h1']);
  t.same(await holders(), ['e@h2:null'], 'and a detach');
});
