// Safety holes closed in the controller, each against real files and a real in-process controller: a thick
// disk never reads a removed disk's bytes, one file backs one container, container ids are never reused and
// their descriptors go with them, the quarantine and operator holds survive a restart, and no file I/O runs
// inside a transaction.
import t, { type Test } from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { Controller } from '../../src/controller/controller.js';
import { HOLD_DELAY_MS } from '../../src/controller/faults.js';
import type { Connection } from '../../src/protocol/connection.js';
import { Store } from '../../src/controller/store.js';
import { FAULT_WRITE } from '../../src/protocol/fault-ops.js';
import { STATE_NO_WRITE, type Entry } from '../../src/table/mapping-table.js';
import { scriptedController } from '../support/scripted-agent.js';

const MB = 1 << 20;

t.test('a thick disk created over a removed disk\'s segments reads zeros, not its data', async (t) => {
  const { dir, controller, ask } = await scriptedController(t, 'vdisk-safety-');
  const file = path.join(dir, 'c1.img');
  await ask('container.add', { name: 'c1', path: file, size: 9 * MB }); // room for one disk after the label: the second reuses
  controller.store.quarantineMs = 0; // reuse at once: the quarantine has its own test
  const old = await controller.store.createDisk({ name: 'old', size: 8 * MB, segmentSize: MB });
  const fd = fs.openSync(file, 'r+');
  t.teardown(() => fs.closeSync(fd));
  for (let i = 0; i < 8; i++) {
    const e = await controller.store.alloc.allocateSegment(old, i);
    fs.writeSync(fd, Buffer.alloc(MB, 0xa5), 0, MB, e.offset); // what the old disk's user wrote
  }
  await ask('disk.rm', { name: 'old' });
  await ask('disk.create', { name: 'new', size: 8 * MB, thick: true });
  const entries = await controller.store.tables.getEntries(await controller.store.disk('new'), 0, 8);
  const buf = Buffer.alloc(MB);
  let stale = 0;
  for (const e of entries) {
    fs.readSync(fd, buf, 0, MB, e.offset);
    for (const b of buf) if (b !== 0) stale++;
  }
  t.same(entries.map((e) => e.offset).sort((a, b) => a - b), Array.from({ length: 8 }, (_, i) => (i + 1) * MB), 'the thick disk reuses the freed segments (after the label)');
  t.equal(stale, 0, 'and every byte it maps reads zero');
});

t.test('one file backs one container: same path spelled differently, symlink, hard link are refused', async (t) => {
  const { dir, controller, ask } = await scriptedController(t, 'vdisk-safety-');
  const file = path.join(dir, 'c.img');
  await ask('container.add', { name: 'c1', path: file, size: 16 * MB });
  fs.symlinkSync(file, path.join(dir, 'sym.img'));
  fs.linkSync(file, path.join(dir, 'hard.img'));
  for (const [how, p] of [['a doubled slash', `${dir}//c.img`], ['a symlink', path.join(dir, 'sym.img')], ['a hard link', path.join(dir, 'hard.img')]]) {
    await t.rejects(ask('container.add', { name: 'c2', path: p }), { code: 'EEXIST', message: /same storage as container c1/ }, `refused through ${how}`);
  }
  t.equal((await controller.store.listContainers()).length, 1, 'nothing recorded');
  await ask('container.add', { name: 'c2', path: path.join(dir, 'other.img'), size: 16 * MB });
  // A database from before identities (or edited by hand) that has the same file twice: check says so.
  await controller.store.db.run('INSERT INTO containers (id, name, path, size) VALUES (99, ?, ?, ?)', ['dup', path.join(dir, 'sym.img'), 16 * MB]);
  const report = await ask<{ ok: boolean; problems: string[] }>('check');
  t.notOk(report.ok, 'check is not clean');
  t.match(report.problems.join('\n'), /containers c1 and dup are the same storage/);
});

t.test('the controller\'s own files are no container: by name, path, symlink or hard link; check reports an old one', async (t) => {
  const { dir, controller, ask } = await scriptedController(t, 'vdisk-safety-');
  const real = fs.realpathSync(dir);
  const db = path.join(dir, 'vdisk.db');
  const outside = fs.mkdtempSync(path.join(path.dirname(dir), 'vdisk-safety-out-'));
  t.teardown(() => fs.rmSync(outside, { recursive: true, force: true }));
  fs.symlinkSync(db, path.join(outside, 'sym.img'));
  fs.linkSync(db, path.join(outside, 'hard.img'));
  fs.linkSync(path.join(dir, 'vdisk.db-wal'), path.join(dir, 'wal-link.img')); // in the data dir, under a container's kind of name
  fs.symlinkSync(dir, path.join(outside, 'data'));
  const dbSize = fs.statSync(db).size;
  const cases: Array<[string, string, number | undefined]> = [
    ['the database', db, undefined], ['the database, grown', db, 64 * MB], ['its WAL', path.join(dir, 'vdisk.db-wal'), undefined],
    ['its shared memory', path.join(dir, 'vdisk.db-shm'), undefined], ['the socket', path.join(dir, 'controller.sock'), undefined],
    ['the log, not made yet', path.join(dir, 'controller.log'), MB], ['an agent log, not made yet', path.join(dir, 'agent-h1.log'), MB],
    ['a rollback journal, not made yet', path.join(dir, 'vdisk.db-journal'), MB], ['the data dir', dir, undefined],
    ['a doubled slash', `${dir}//vdisk.db`, undefined], ['a symlink', path.join(outside, 'sym.img'), undefined],
    ['the data dir through a symlink', path.join(outside, 'data', 'vdisk.db'), undefined],
    ['a hard link outside', path.join(outside, 'hard.img'), undefined], ['a hard link inside', path.join(dir, 'wal-link.img'), undefined],
  ];
  for (const [what, p, size] of cases) {
    await t.rejects(ask('container.add', { name: 'evil', path: p, ...(size === undefined ? {} : { size }) }),
      { code: 'EINVAL', message: `the controller's` }, `${what} is refused`);
    await t.rejects(ask('container.add', { name: 'evil', path: p }), { message: real }, `${what}: the message names the data dir`);
  }
  t.same(await controller.store.listContainers(), [], 'nothing recorded');
  t.equal(fs.statSync(db).size, dbSize, 'the database was not grown');
  for (const f of ['controller.log', 'agent-h1.log', 'vdisk.db-journal']) t.notOk(fs.existsSync(path.join(dir, f)), `no ${f} made`);
  await ask('container.add', { name: 'c1', path: path.join(dir, 'c1.img'), size: 16 * MB }); // a container may still live in the data dir
  // A database from before the refusal that has the controller's own file as a container: check says so.
  await controller.store.db.run('INSERT INTO containers (id, name, path, size) VALUES (99, ?, ?, ?)', ['old', path.join(outside, 'hard.img'), MB]);
  const report = await ask<{ ok: boolean; problems: string[] }>('check');
  t.notOk(report.ok, 'check is not clean');
  t.match(report.problems, [`container old (${path.join(outside, 'hard.img')}) is the controller's own vdisk.db in its data directory ${real}`]);
});

t.test('container ids are never reused, and a removed container\'s descriptor is closed', async (t) => {
  const { dir, controller, ask } = await scriptedController(t, 'vdisk-safety-');
  const a = await ask<{ id: number }>('container.add', { name: 'a', path: path.join(dir, 'a.img'), size: 16 * MB });
  const b = await ask<{ id: number }>('container.add', { name: 'b', path: path.join(dir, 'b.img'), size: 16 * MB });
  await controller.io.zero(b.id, 0, MB); // the controller opens b (as a fault's zeroing would)
  t.same(controller.io.openContainers().sort(), [b.id]);
  await ask('container.rm', { name: 'b' });
  t.same(controller.io.openContainers(), [], 'rm closed the cached descriptor');
  const c = await ask<{ id: number }>('container.add', { name: 'c', path: path.join(dir, 'c.img'), size: 16 * MB });
  t.ok(c.id > b.id && c.id > a.id, `the new container got id ${c.id}, not ${b.id} again`);
});

t.test('the freed-segment quarantine survives a restart of the store', async (t) => {
  const dir = fs.mkdtempSync(path.join(process.env.TMPDIR ?? '/tmp', 'vdisk-safety-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  let store = await Store.open(dir);
  await store.addContainer('c', path.join(dir, 'c.img'), 64 * MB);
  store.quarantineMs = 3_600_000;
  const d = await store.createDisk({ name: 'd', size: 4 * MB, segmentSize: MB });
  const freed = await store.alloc.allocateSegment(d, 0);
  await store.cow.reclaimSegment(d, 0);
  await store.close();
  store = await Store.open(dir);
  t.teardown(() => store.close());
  const next = await store.alloc.allocateSegment(await store.disk('d'), 1);
  t.not(next.offset, freed.offset, 'a restarted controller does not hand out a quarantined segment');
});

t.test('an operator hold survives a controller restart: a write to the held segment waits, it is not copied', async (t) => {
  const dir = fs.mkdtempSync(path.join(process.env.TMPDIR ?? '/tmp', 'vdisk-safety-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  let controller = await Controller.start(dir);
  fs.writeFileSync(path.join(dir, 'c.img'), ''); // the controller zeroes ahead in it
  await controller.store.addContainer('c', path.join(dir, 'c.img'), 64 * MB);
  const d = await controller.store.createDisk({ name: 'd', size: 4 * MB, segmentSize: MB });
  await controller.store.alloc.allocateSegment(d, 0);
  await controller.attachments.changeStates(d, 0, 1, STATE_NO_WRITE, true);
  const write = { op: FAULT_WRITE, segment: 0, states: STATE_NO_WRITE, offset: 0, length: 4096 };
  const nobody = {} as Connection; // no other holder: nothing is pushed
  t.same(await controller.attachments.fault(nobody, d, write, controller.io), { action: 'delay', ms: HOLD_DELAY_MS }, 'held before the restart');
  await controller.stop();
  controller = await Controller.start(dir);
  t.teardown(() => controller.stop());
  t.same(await controller.attachments.fault(nobody, d, write, controller.io), { action: 'delay', ms: HOLD_DELAY_MS }, 'and after it');
  const [e] = await controller.store.tables.getEntries(d, 0, 1);
  t.ok(e.states & STATE_NO_WRITE, 'still No-write, not copied away');
});

t.test('zeroing and copying run outside transactions: other requests commit meanwhile', async (t) => {
  const dir = fs.mkdtempSync(path.join(process.env.TMPDIR ?? '/tmp', 'vdisk-safety-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const store = await Store.open(dir);
  t.teardown(() => store.close());
  await store.addContainer('c', path.join(dir, 'c.img'), 64 * MB);
  const d = await store.createDisk({ name: 'd', size: 4 * MB, segmentSize: MB });
  let during: Entry[] = [];
  const e = await store.alloc.allocateSegment(d, 0, async () => {
    // Another request's transaction commits while this segment is being zeroed (it would wait forever
    // for a transaction held across the I/O).
    await store.touchAgent('h1', 1234);
    during = await store.tables.getEntries(d, 0, 1);
  });
  t.same([...(await store.agentLeases())], [['h1', 1234]], 'the other request committed during the zeroing');
  t.ok(during[0].states & 4, 'and the segment was not mapped yet while it was being zeroed'); // STATE_ZERO
  t.same(await store.tables.getEntries(d, 0, 1), [e], 'mapped after');
  const check = await store.db.all<{ pending: number }>('SELECT pending FROM allocations');
  t.same(check, [{ pending: 0 }], 'the reservation became a committed allocation');
});

t.test('a reservation left by a crash between the two transactions goes back to the pool at start', async (t) => {
  const dir = fs.mkdtempSync(path.join(process.env.TMPDIR ?? '/tmp', 'vdisk-safety-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  let store = await Store.open(dir);
  await store.addContainer('c', path.join(dir, 'c.img'), 64 * MB);
  const d = await store.createDisk({ name: 'd', size: 4 * MB, segmentSize: MB });
  // The zeroing "crashes" the flow: the store gives the reservation back itself.
  await t.rejects(store.alloc.allocateSegment(d, 0, async () => { throw new Error('EIO from the container'); }), /EIO from the container/);
  t.same(await store.db.all('SELECT * FROM allocations'), [], 'a failed zeroing leaves no allocation');
  t.same(await store.tables.getEntries(d, 0, 1), [{ states: 4, container: 0, offset: 0, alt: 0 }], 'and no mapping');
  // A real crash leaves the row pending: simulate one and reopen.
  await store.db.run('INSERT INTO allocations (container_id, unit, units, refcount, pending) VALUES (1, 160, 16, 1, 1)');
  await store.close();
  store = await Store.open(dir);
  t.teardown(() => store.close());
  t.same(await store.db.all('SELECT * FROM allocations'), [], 'reopened: the pending reservation is gone');
  t.same(await store.db.all<{ unit: number }>('SELECT unit FROM free_extents'), [{ unit: 160 }], 'and its segment is free');
});

/** A controller setting from the environment: each bad value refused at start (EINVAL naming it), '0' taken. */
async function envSetting(t: Test, name: string, bad: string[], read: (c: Controller) => number): Promise<void> {
  const dir = fs.mkdtempSync(path.join(process.env.TMPDIR ?? '/tmp', 'vdisk-safety-'));
  t.teardown(() => { delete process.env[name]; });
  for (const v of bad) {
    process.env[name] = v;
    await t.rejects(Controller.start(dir), { code: 'EINVAL', message: new RegExp(name) }, `"${v}" is refused`);
  }
  process.env[name] = '0';
  const controller = await Controller.start(dir);
  t.teardown(async () => {
    await controller.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  t.equal(read(controller), 0, 'and 0 is taken');
}

t.test('VDISK_QUARANTINE_MS sets the reuse delay; anything but whole milliseconds is refused at start', (t) =>
  envSetting(t, 'VDISK_QUARANTINE_MS', ['soon', '-1', '1.5', ''], (c) => c.store.quarantineMs));

t.test('VDISK_ALLOC_AHEAD_MB sets the window for sequential writers (0: none); anything else is refused at start', (t) =>
  envSetting(t, 'VDISK_ALLOC_AHEAD_MB', ['lots', '-1', '2.5', '', '1025'], (c) => c.store.allocAheadBytes));
