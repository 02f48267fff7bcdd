// Crash points (src/util/failpoints.ts) in a real controller process: armed with VDISK_FAILPOINT, the process
// dies there as kill -9 would; restarted without it, `vdisk check` is clean, nothing reserved leaks, a
// committed step is kept and an uncommitted one is gone, and the interrupted request succeeds when resent.
import t from 'tap';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { socketPath } from '../../src/controller/paths.js';
import { connect } from '../../src/protocol/client.js';
import type { Connection } from '../../src/protocol/connection.js';
import { FAULT_READ, FAULT_WRITE } from '../../src/protocol/fault-ops.js';
import { STATE_ALTERNATE, STATE_INVALID, STATE_NO_WRITE, STATE_ZERO, type Entry } from '../../src/table/mapping-table.js';
import { FAILPOINTS } from '../../src/util/failpoints.js';
import { runCli } from '../support/cli.js';

const SEG = 64 * 1024;
const MB = 1 << 20;
type Answer = { action: string; entry: Entry; allocated?: boolean };

/** A controller in its own process with `failpoint` armed, a CLI connection and an agent connection. */
async function armed(t: { teardown: (fn: () => unknown) => void }, failpoint: string | undefined, dir?: string) {
  const data = dir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'vdisk-fp-'));
  if (failpoint) process.env.VDISK_FAILPOINT = failpoint;
  const started = await runCli(['controller', 'start'], data);
  delete process.env.VDISK_FAILPOINT;
  if (started.status !== 0) throw new Error(`controller start: ${started.err}`);
  const cli = (await connect(socketPath(data), { role: 'cli' })).conn;
  const agent = (await connect(socketPath(data), { role: 'agent', hostId: 'fp' })).conn;
  agent.onRequest(async () => ({}));
  await agent.request('agent.register', { pid: process.pid, leaseMs: 5000, disks: [] });
  t.teardown(async () => {
    await Promise.all([cli.close(), agent.close()]).catch(() => {});
    await runCli(['controller', 'stop'], data);
  });
  const ask = async <T>(op: string, args: Record<string, unknown> = {}): Promise<T> => (await cli.request(op, args)).result as T;
  const fault = async (diskId: number, segment: number, states: number): Promise<Answer> =>
    (await agent.request('fault', { diskId, op: FAULT_WRITE, segment, states, offset: 0, length: 4096 })).result as Answer;
  return { data, cli, agent, ask, fault };
}

/** Waits until the armed controller has died (its connection closes) after `request` set it off. */
async function dies(conn: Connection, request: Promise<unknown>): Promise<boolean> {
  await request.catch(() => {});
  await conn.closed;
  return true;
}

async function setup(t: Parameters<typeof armed>[0], failpoint: string) {
  const s = await armed(t, failpoint);
  const img = path.join(s.data, 'c1.img');
  fs.writeFileSync(img, Buffer.alloc(4 * MB, 0xee)); // never blank: only zeroing makes zeros
  await s.ask('container.add', { name: 'c1', path: img, size: 4 * MB });
  const d = await s.ask<{ id: number }>('disk.create', { name: 'd', size: 8 * SEG, segmentSize: SEG });
  return { ...s, img, diskId: d.id };
}

async function restart(t: Parameters<typeof armed>[0], data: string) {
  const s = await armed(t, undefined, data);
  const check = await s.ask<{ ok: boolean; problems: string[] }>('check');
  return { ...s, check };
}

t.test('the list of failpoints', async (t) => {
  const r = await runCli(['debug', 'failpoints']);
  t.equal(r.status, 0);
  t.same(r.out.trim().split('\n').map((l) => l.split(/\s+/)[0]), Object.keys(FAILPOINTS));
});

/**
 * A freed segment holding another disk's bytes, reusable at once (no quarantine): the next thin fault takes it
 * and must zero it (the batch's zeroing path); fresh storage from the zeroed frontier needs none.
 */
async function reusable(s: Awaited<ReturnType<typeof setup>>): Promise<Entry> {
  const e = await s.ask<{ id: number }>('disk.create', { name: 'e', size: 8 * SEG, segmentSize: SEG });
  const a = await s.fault(e.id, 0, STATE_ZERO);
  const fd = fs.openSync(s.img, 'r+');
  fs.writeSync(fd, Buffer.alloc(SEG, 0xdd), 0, SEG, a.entry.offset); // e's data
  fs.closeSync(fd);
  await s.ask('disk.rm', { name: 'e' });
  return a.entry;
}

t.test('thin fault: killed after zeroing, before the mapping commits', async (t) => {
  process.env.VDISK_QUARANTINE_MS = '0';
  t.teardown(() => { delete process.env.VDISK_QUARANTINE_MS; });
  const s = await setup(t, 'batch.zeroed:1');
  const freed = await reusable(s);
  t.ok(await dies(s.agent, s.fault(s.diskId, 2, STATE_ZERO)), 'the controller died at the failpoint');
  const r = await restart(t, s.data);
  t.same(r.check.problems, [], 'check is clean: the reservation went back');
  t.match(await r.ask('container.ls'), [{ usedBytes: 0 }], 'nothing is allocated');
  const a = await r.fault(s.diskId, 2, STATE_ZERO);
  t.same([a.entry.container, a.entry.offset], [freed.container, freed.offset], 'the resent fault reuses the freed segment');
  t.ok(a.allocated, 'the resent fault allocates');
  t.ok(fs.readFileSync(s.img).subarray(a.entry.offset, a.entry.offset + SEG).every((b) => b === 0), 'and its segment reads zeros');
});

t.test('thin fault: killed after the commit, before the answer', async (t) => {
  const s = await setup(t, 'batch.committed:1');
  await dies(s.agent, s.fault(s.diskId, 3, STATE_ZERO));
  const r = await restart(t, s.data);
  t.same(r.check.problems, []);
  t.match(await r.ask('container.ls'), [{ usedBytes: SEG }], 'the committed mapping is kept, once');
  const a = await r.fault(s.diskId, 3, STATE_ZERO);
  t.notOk(a.allocated, 'the resent fault gets the stored entry, no second allocation');
  t.match(await r.ask('container.ls'), [{ usedBytes: SEG }]);
});

t.test('a single thin fault into fresh storage: killed after its one commit, before the answer', async (t) => {
  const s = await setup(t, 'staged.committed:1');
  // Invalid, as an agent that lost its lease reports it: the one-fault path, not the batch.
  await dies(s.agent, s.fault(s.diskId, 4, STATE_INVALID));
  const r = await restart(t, s.data);
  t.same(r.check.problems, [], 'check is clean');
  t.match(await r.ask('container.ls'), [{ usedBytes: SEG }], 'the committed mapping is kept, once');
  const a = await r.fault(s.diskId, 4, STATE_INVALID);
  t.notOk(a.allocated, 'the resent fault gets the stored entry, no second allocation');
  t.ok(fs.readFileSync(s.img).subarray(a.entry.offset, a.entry.offset + SEG).every((b) => b === 0), 'which reads zeros');
});

t.test('copy-on-write: killed after the copy, before the remap', async (t) => {
  const s = await setup(t, 'staged.io:1');
  const first = await s.fault(s.diskId, 0, STATE_ZERO); // batch path: no staged failpoint on the way
  await s.ask('disk.snapshot', { name: 'd', snapshot: 'snap' });
  await dies(s.agent, s.fault(s.diskId, 0, STATE_NO_WRITE));
  const r = await restart(t, s.data);
  t.same(r.check.problems, [], 'check is clean: the copy\'s reservation went back');
  const info = await r.ask<{ perContainer: Record<string, number> }>('disk.info', { name: 'snap' });
  t.same(info.perContainer, { c1: SEG }, 'the snapshot still maps its one segment');
  const a = await r.fault(s.diskId, 0, STATE_NO_WRITE);
  // --partial bitmap (the default): the 4 KiB write's block moves to an alternate segment of its own.
  t.ok(a.allocated && (a.entry.states & STATE_ALTERNATE || a.entry.offset !== first.entry.offset), 'the resent write gets storage of its own');
  t.match(await r.ask('container.ls'), [{ usedBytes: 2 * SEG }], 'one more segment than the snapshot\'s, no leftover from the crash');
  t.same((await r.ask<{ ok: boolean; problems: string[] }>('check')).problems, []);
});

/** A `--partial copy` disk of four written segments (segment k holds 0x40 + k) and a snapshot of it. */
async function sharedCopyDisk(s: Awaited<ReturnType<typeof setup>>): Promise<{ diskId: number; old: Entry[] }> {
  const pc = await s.ask<{ id: number }>('disk.create', { name: 'pc', size: 4 * SEG, segmentSize: SEG, partial: 'copy' });
  const old = await Promise.all([0, 1, 2, 3].map((k) => s.fault(pc.id, k, STATE_ZERO).then((a) => a.entry))); // the thin batch: no staged failpoint
  const fd = fs.openSync(s.img, 'r+');
  for (const [k, e] of old.entries()) fs.writeSync(fd, Buffer.alloc(SEG, 0x40 + k), 0, SEG, e.offset);
  fs.closeSync(fd);
  await s.ask('disk.snapshot', { name: 'pc', snapshot: 'pc-snap' });
  return { diskId: pc.id, old };
}

const cowAll = (r: { agent: Connection }, diskId: number): Promise<Answer[]> => Promise.all([0, 1, 2, 3].map(async (k) =>
  (await r.agent.request('fault', { diskId, op: FAULT_WRITE, segment: k, states: STATE_NO_WRITE, offset: 4096, length: 4096 })).result as Answer));

t.test('grouped copy-on-write: killed after the copies, before the remaps', async (t) => {
  const s = await setup(t, 'staged.io:1');
  const { diskId, old } = await sharedCopyDisk(s);
  t.ok(await dies(s.agent, cowAll(s, diskId)), 'the controller died at the failpoint');
  const r = await restart(t, s.data);
  t.same(r.check.problems, [], 'check is clean: the copies\' reservations went back');
  t.match(await r.ask('container.ls'), [{ usedBytes: 4 * SEG }], 'only the shared segments are allocated');
  const a = await cowAll(r, diskId);
  t.ok(a.every((x, k) => x.allocated && x.entry.offset !== old[k]!.offset), 'the resent writes get copies of their own');
  const bytes = fs.readFileSync(s.img);
  t.ok(a.every((x, k) => bytes.subarray(x.entry.offset, x.entry.offset + SEG).every((b) => b === 0x40 + k)), 'holding the shared bytes');
  t.ok(old.every((e, k) => bytes.subarray(e.offset, e.offset + SEG).every((b) => b === 0x40 + k)), 'which the snapshot keeps');
  t.match(await r.ask('container.ls'), [{ usedBytes: 8 * SEG }]);
  t.same((await r.ask<{ ok: boolean; problems: string[] }>('check')).problems, []);
});

t.test('grouped copy-on-write: killed after the remaps commit, before the answers', async (t) => {
  const s = await setup(t, 'staged.committed:1');
  const { diskId, old } = await sharedCopyDisk(s);
  await dies(s.agent, cowAll(s, diskId));
  const r = await restart(t, s.data);
  t.same(r.check.problems, [], 'check is clean');
  // The batch that died holds the first fault and whichever arrived with it: its remaps are kept, once.
  const stored = await r.agent.request('fault', { diskId, op: FAULT_READ, segment: 0, states: STATE_INVALID, offset: 0, length: 4096 })
    .then((x) => (x.result as Answer).entry);
  t.ok(stored.states === 0 && stored.offset !== old[0]!.offset, 'the first write\'s remap was committed');
  const used = (await r.ask<Array<{ usedBytes: number }>>('container.ls'))[0]!.usedBytes / SEG;
  t.ok(used >= 5 && used <= 8, `the shared segments and one copy per committed remap (${used} segments)`);
  const a = await cowAll(r, diskId);
  t.equal(a.filter((x) => !x.allocated).length, used - 4, 'a resent write whose remap was committed gets the stored copy; the others copy now');
  t.ok(a.every((x, k) => x.entry.states === 0 && x.entry.offset !== old[k]!.offset), 'every write has a copy of its own');
  const bytes = fs.readFileSync(s.img);
  t.ok(a.every((x, k) => bytes.subarray(x.entry.offset, x.entry.offset + SEG).every((b) => b === 0x40 + k)), 'holding the shared bytes');
  t.match(await r.ask('container.ls'), [{ usedBytes: 8 * SEG }]);
  t.same((await r.ask<{ ok: boolean; problems: string[] }>('check')).problems, []);
});

t.test('thick create: killed after zeroing, before the disk exists', async (t) => {
  const s = await setup(t, 'thick.zeroed:1');
  await dies(s.cli, s.ask('disk.create', { name: 'thick', size: 16 * SEG, segmentSize: SEG, thick: true }));
  const r = await restart(t, s.data);
  t.same(r.check.problems, []);
  t.same((await r.ask<Array<{ name: string }>>('disk.ls')).map((d) => d.name), ['d'], 'no half-made disk');
  t.match(await r.ask('container.ls'), [{ usedBytes: 0 }], 'and no reserved run left');
  await r.ask('disk.create', { name: 'thick', size: 16 * SEG, segmentSize: SEG, thick: true });
  t.match(await r.ask('container.ls'), [{ usedBytes: 16 * SEG }], 'the create succeeds when resent');
});

t.test('snapshot and rm: killed after their commit, the step is kept', async (t) => {
  const s = await setup(t, 'snapshot.committed:1');
  await s.fault(s.diskId, 1, STATE_ZERO);
  await dies(s.cli, s.ask('disk.snapshot', { name: 'd', snapshot: 'snap' }));
  let r = await restart(t, s.data);
  t.same(r.check.problems, []);
  t.match(await r.ask('disk.info', { name: 'snap' }), { readOnly: true, perContainer: { c1: SEG } }, 'the snapshot exists and shares the segment');
  await Promise.all([r.cli.close(), r.agent.close()]);
  await runCli(['controller', 'stop'], s.data);

  process.env.VDISK_FAILPOINT = 'rm.committed:1';
  const again = await runCli(['controller', 'start'], s.data);
  delete process.env.VDISK_FAILPOINT;
  t.equal(again.status, 0);
  const cli = (await connect(socketPath(s.data), { role: 'cli' })).conn;
  await dies(cli, cli.request('disk.rm', { name: 'snap' }));
  r = await restart(t, s.data);
  t.same(r.check.problems, []);
  t.same((await r.ask<Array<{ name: string }>>('disk.ls')).map((d) => d.name), ['d'], 'the snapshot is gone');
  t.match(await r.ask('container.ls'), [{ usedBytes: SEG }], 'the origin keeps its segment');
});

t.test('a bad VDISK_FAILPOINT stops the controller from starting, with the reason', async (t) => {
  const data = fs.mkdtempSync(path.join(os.tmpdir(), 'vdisk-fp-'));
  t.teardown(() => fs.rmSync(data, { recursive: true, force: true }));
  process.env.VDISK_FAILPOINT = 'no.such:1';
  const r = await runCli(['controller', 'start'], data);
  delete process.env.VDISK_FAILPOINT;
  t.not(r.status, 0);
  t.match(fs.readFileSync(path.join(data, 'controller.log'), 'utf8'), /VDISK_FAILPOINT must be NAME:N/);
});
