// Group commit of first writes into thin segments, with a real controller and a scripted agent: concurrent
// faults share batches, every answer names a distinct zeroed segment that is already committed when the
// answer arrives, a fault the batch cannot settle (a held segment, a full container) still gets its answer.
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import type { Disk } from '../../src/controller/store.js';
import { FAULT_WRITE } from '../../src/protocol/fault-ops.js';
import { STATE_ZERO, type Entry } from '../../src/table/mapping-table.js';
import { scriptedController } from '../support/scripted-agent.js';

const SEG = 64 * 1024;
const MB = 1 << 20;
const { dir, controller, scriptedAgent, ask } = await scriptedController(t, 'vdisk-thinbatch-');
type Answer = { action: string; entry: Entry; allocated?: boolean; errno?: number };

const img = path.join(dir, 'c1.img');
fs.writeFileSync(img, Buffer.alloc(3 * MB, 0xff)); // a container that was never blank (its first MiB: the label's)
await ask('container.add', { name: 'c1', path: img, size: 3 * MB });
const hx = await scriptedAgent('hx', 3);
const fault = async (diskId: number, segment: number): Promise<Answer> =>
  (await hx.conn.request('fault', { diskId, op: FAULT_WRITE, segment, states: STATE_ZERO, offset: 0, length: 4096 })).result as Answer;

t.test('16 concurrent first writes: grouped, distinct, zeroed, committed before their answers', async (t) => {
  const d = await ask<Disk>('disk.create', { name: 'g', size: 16 * SEG, segmentSize: SEG });
  await ask('disk.attach', { name: 'g', hostId: 'hx' });
  const store = controller.store;
  const disk = await store.disk('g');
  const committedAtAnswer: boolean[] = [];
  const answers = await Promise.all(Array.from({ length: 16 }, (_, s) => fault(d.id, s).then(async (a) => {
    const [stored] = await store.tables.getEntries(disk, s, 1);
    committedAtAnswer.push(stored.states === 0 && stored.offset === a.entry.offset);
    return a;
  })));
  t.ok(answers.every((a) => a.action === 'entry' && a.allocated && a.entry.states === 0), 'every fault got a new mapping');
  t.equal(new Set(answers.map((a) => a.entry.offset)).size, 16, 'sixteen distinct segments');
  t.same(committedAtAnswer, Array(16).fill(true), 'each mapping was in the store when its answer arrived');
  const stats = controller.attachments.thin!.stats;
  t.equal(stats.faults, 16, 'all settled by batches');
  t.ok(stats.batches < 16, `grouped: ${stats.batches} batch(es) for 16 faults`);
  const bytes = fs.readFileSync(img);
  t.ok(answers.every((a) => bytes.subarray(a.entry.offset, a.entry.offset + SEG).every((b) => b === 0)), 'every allocated segment reads zeros');
  t.same(await fault(d.id, 3), { action: 'entry', entry: answers[3].entry }, 'a second fault for a mapped segment gets the same entry');
  t.match(await ask('check'), { ok: true });
});

t.test('what a batch cannot settle takes the one-fault path: no space, a held segment', async (t) => {
  // c1 has 2 MiB after its label = 32 segments of 64 KiB; 16 are used: a 20-segment batch does not fit.
  const d = await ask<Disk>('disk.create', { name: 'h', size: 20 * SEG, segmentSize: SEG });
  await ask('disk.attach', { name: 'h', hostId: 'hx' });
  await ask('disk.states', { name: 'h', first: 19, count: 1, bits: 2, set: true });
  const answers = await Promise.all(Array.from({ length: 20 }, (_, s) => fault(d.id, s)));
  const allocated = answers.filter((a) => a.action === 'entry' && a.allocated).length;
  t.equal(allocated, 16, 'the room there was went to 16 of them');
  t.equal(answers.filter((a) => a.action === 'error' && a.errno === 28).length, 3, 'three got ENOSPC');
  t.equal(answers[19].action, 'delay', 'the held segment\'s write waits');
  t.match(await ask('check'), { ok: true });
});

t.test('first-write batches commit without their own fsync while every holder is on this machine; disk.sync makes them durable', async (t) => {
  const img2 = path.join(dir, 'c2.img');
  fs.writeFileSync(img2, Buffer.alloc(3 * MB, 0xff));
  await ask('container.add', { name: 'c2', path: img2, size: 3 * MB });
  const db = controller.store.db;
  const lz = await ask<Disk>('disk.create', { name: 'lz', size: 4 * SEG, segmentSize: SEG });
  await ask('disk.attach', { name: 'lz', hostId: 'hx' });
  await db.sync();
  const lazyBefore = db.stats.lazyCommits;
  const a = await Promise.all([0, 1, 2].map((s) => fault(lz.id, s)));
  t.ok(a.every((x) => x.action === 'entry' && x.allocated), 'mapped');
  t.ok(db.stats.lazyCommits > lazyBefore && db.lazyPending > 0, `committed lazily (${db.stats.lazyCommits - lazyBefore} commit(s)), not yet durable`);
  const synced = (await hx.conn.request('disk.sync', { diskId: lz.id })).result as { commits: number };
  t.ok(synced.commits > 0, `disk.sync covered ${synced.commits} lazy commit(s)`);
  t.equal(db.lazyPending, 0, 'everything committed is durable now');
  t.same((await hx.conn.request('disk.sync', { diskId: lz.id })).result, { commits: 0 }, 'a second disk.sync has nothing to do');
  await t.rejects(hx.conn.request('disk.sync', { diskId: 9999 }), { code: 'ENOENT' }, 'an unknown disk is refused');

  // A holder on another machine (a host with a credential) could outlive a power cut of this one.
  await scriptedAgent('hy', 3);
  await db.run("INSERT INTO hosts (host_id, fingerprint, serial, not_after) VALUES ('hy', 'ab', '01', '2099-01-01T00:00:00Z')");
  const rz = await ask<Disk>('disk.create', { name: 'rz', size: 4 * SEG, segmentSize: SEG });
  await fault(lz.id, 3);
  t.ok(db.lazyPending > 0, 'another lazy commit');
  await ask('disk.attach', { name: 'rz', hostId: 'hx' });
  await ask('disk.attach', { name: 'rz', hostId: 'hy' });
  t.equal(db.lazyPending, 0, 'a table load (which may go to another machine) made it durable first');
  const lazyMid = db.stats.lazyCommits;
  t.equal((await fault(rz.id, 0)).action, 'entry', 'mapped');
  t.same([db.stats.lazyCommits, db.lazyPending], [lazyMid, 0], 'durably: no lazy commit');
  t.match(await ask('check'), { ok: true });
});
