// The crash matrix (issue 12): for every failpoint of src/util/failpoints.ts, its flow runs under fio verify
// with the point armed in the controller or the agent; the process dies there as kill -9 would; it is
// restarted unarmed; then fio finishes and verifies, `vdisk check` is clean (no leaked or doubly used
// segment), a snapshot taken at the start still reads its checksum, and the interrupted step is either whole
// or absent. CI runs every other failpoint of each half at its first pass, alternating with the commit (see
// ROTATION); VDISK_TORTURE=full (npm run torture) runs all of them, also at later passes.
// This file runs the first half; crash-matrix-2.test.ts the second.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import { Cluster } from './cluster.js';
import { alive, fioVerify, readDirect, readDirectAsync, run, ublkAvailable, writeDirect } from './helpers.js';
import { FAILPOINTS, type Failpoint } from '../../src/util/failpoints.js';

const missing = ublkAvailable();
if (missing) t.fail(`needs a real ublk kernel: ${missing}`);
const MB = 1 << 20;
const FULL = process.env.VDISK_TORTURE === 'full';
/** The passes each failpoint is armed at: the first in CI, later ones too in the full run. */
const PASSES = FULL ? [1, 3] : [1];
/**
 * Which failpoints of a half a CI run takes: those at even positions or those at odd ones, by the parity of the
 * commit under test (VDISK_CRASH_ROTATION=0|1 chooses): each crash costs about 30 s of emulated time and the
 * 25-minute CI budget holds half of them, so two consecutive commits cover every point between them. The full
 * run and a replay (VDISK_CRASH_ONLY) take every point.
 */
function rotation(): 0 | 1 {
  const env = process.env.VDISK_CRASH_ROTATION;
  if (env === '0' || env === '1') return Number(env) as 0 | 1;
  const head = spawnSync('git', ['rev-parse', 'HEAD'], { encoding: 'utf8' });
  const last = head.status === 0 ? parseInt(head.stdout.trim().slice(-1), 16) : NaN;
  return (Number.isNaN(last) ? Math.floor(Date.now() / 86_400_000) : last) % 2 === 0 ? 0 : 1;
}
type Test = Pick<typeof t, "ok" | "equal" | "pass" | "match">;
/** Every disk here is 4 segments: what each flow needs, and little emulated I/O per crash. */
const SIZE = 4 * MB;
const FIO = ['--number_ios=32', '--rate_iops=16'];
const COW_FIO = ['--number_ios=8', '--rate_iops=16'];
const sha = (b: Buffer) => crypto.createHash('sha256').update(b).digest('hex');

interface Ctx {
  c: Cluster;
  /** The disk attached on h1 that fio verify writes to while the flow runs. */
  w: string;
  dev: string;
  i: number;
  /** The pass the failpoint is armed at. */
  n: number;
  /** Where the migration scenario moves the disk. */
  to?: string;
  /** The sha256 of what `shared` wrote before its snapshot. */
  snapSha?: string;
}

interface Scenario {
  /** Prepares what the flow needs, before the process is armed. */
  setup?(x: Ctx): Promise<void>;
  /** Sets the flow off; returns once it has been started (the armed process dies somewhere in it). */
  act(x: Ctx): Promise<void>;
  /** What must hold after the restart besides the common checks. */
  after?(x: Ctx, t: Test): Promise<void>;
  /** The most passes its flow makes (for the full run's later passes): 3 unless said. */
  passes?: number;
  /** fio's own writes are the flow (first writes, copy-on-write): it starts with the armed process. */
  fioIsTheFlow?: boolean;
  /** Runs with grants on (part 1's controller runs without: its flows are the faults grants would spare). */
  grants?: boolean;
  /** fio's I/O count and rate, when not FIO. */
  fio?: string[];
}

/** Writes the whole disk and snapshots it, so that fio's writes are copy-on-write faults. */
const shared = async (x: Ctx) => {
  const data = crypto.randomBytes(SIZE);
  x.snapSha = sha(data);
  writeDirect(x.dev, 0, data);
  await x.c.ok('snapshot', x.w, `${x.w}-s${x.i}`);
};
/**
 * Writes the whole disk, then discards it: every unshared segment goes back to the pool holding data, every
 * entry to Zero (thin again). The controller here reuses freed segments at once (VDISK_QUARANTINE_MS=0, below),
 * so the next first writes take them back and must zero them: the batch's zeroing path, the one with failpoints
 * between its commits (a segment from the zeroed frontier is mapped in one commit, with nothing to zero).
 */
const fresh = async (x: Ctx) => {
  writeDirect(x.dev, 0, crypto.randomBytes(SIZE));
  run('blkdiscard', [x.dev]);
};
const infoOf = (x: Ctx, name: string) => x.c.json<{ perContainer: Record<string, number>; allocatedBytes: number }>('info', name);

const SCENARIOS: Record<Failpoint, Scenario> = {
  // Four fresh segments: the first fault is a batch of its own, the ones that queue behind it a second.
  'batch.planned': { setup: fresh, fioIsTheFlow: true, passes: 2, act: async () => {} },
  'batch.zeroed': { setup: fresh, fioIsTheFlow: true, passes: 2, act: async () => {} },
  'batch.committed': { setup: fresh, fioIsTheFlow: true, passes: 2, act: async () => {} },
  // fio's fsyncs are FLUSHes, each needing the mappings its first writes got (committed lazily) made durable.
  'sync.committed': { setup: fresh, fioIsTheFlow: true, fio: [...FIO, '--fsync=4'], passes: 2, act: async () => {} },
  // Each 4 KiB write to a shared block is a copy-on-write fault (slow under emulation): 8 reach pass 3.
  'staged.planned': { setup: shared, fioIsTheFlow: true, fio: COW_FIO, act: async () => {} },
  'staged.io': { setup: shared, fioIsTheFlow: true, fio: COW_FIO, act: async () => {} },
  'staged.committed': { setup: shared, fioIsTheFlow: true, fio: COW_FIO, act: async () => {} },
  // The first grant a fresh disk's writer asks for commits and the controller dies: the restarted agent's
  // registration frees it (whole or absent either way), and fio's first writes fault or take new grants.
  'grant.committed': { setup: fresh, fioIsTheFlow: true, grants: true, passes: 2, act: async () => {} },
  'thick.reserved': {
    act: async (x) => { for (let k = 0; k < 3; k++) await x.c.vdisk('create', `t${x.i}-${k}`, '--size', '4M', '--thick'); },
    after: async (x, t) => {
      // Each create is whole or absent; a resent one succeeds and its disk reads zeros through its device.
      await x.c.vdisk('rm', `t${x.i}-2`);
      await x.c.ok('create', `t${x.i}-2`, '--size', '4M', '--thick');
      const d = await x.c.attach(`t${x.i}-2`);
      t.ok(readDirect(d, 0, SIZE).equals(Buffer.alloc(SIZE)), 'the resent thick disk reads zeros');
      await x.c.ok('detach', `t${x.i}-2`);
    },
  },
  'thick.zeroed': { act: async (x) => SCENARIOS['thick.reserved'].act(x), after: async (x, t) => SCENARIOS['thick.reserved'].after!(x, t) },
  'snapshot.committed': {
    act: async (x) => { for (let k = 0; k < 3; k++) await x.c.vdisk('snapshot', x.w, `${x.w}-p${x.i}-${k}`); },
    after: async (x, t) => {
      const names = (await x.c.json<Array<{ name: string; readOnly: boolean }>>('ls')).filter((d) => d.name.startsWith(`${x.w}-p${x.i}-`));
      t.ok(names.length >= 1 && names.every((d) => d.readOnly), `the committed snapshot exists, read-only (${names.map((d) => d.name).join(', ')})`);
    },
  },
  'clone.committed': {
    act: async (x) => { for (let k = 0; k < 3; k++) await x.c.vdisk('clone', 'base-s', `k${x.i}-${k}`); },
    after: async (x, t) => {
      const d = await x.c.attach(`k${x.i}-0`);
      t.equal(sha(readDirect(d, 0, SIZE)), baseSha, 'the committed clone reads the snapshot\'s data');
      await x.c.ok('detach', `k${x.i}-0`);
    },
  },
  'rm.committed': {
    setup: async (x) => { for (let k = 0; k < 3; k++) await x.c.ok('snapshot', 'base', `r${x.i}-${k}`); },
    act: async (x) => { for (let k = 0; k < 3; k++) await x.c.vdisk('rm', `r${x.i}-${k}`); },
    after: async (x, t) => {
      const left = (await x.c.json<Array<{ name: string }>>('ls')).filter((d) => d.name.startsWith(`r${x.i}-`)).map((d) => d.name);
      t.ok(left.length < 3, `the committed removal is kept (left: ${left.join(', ') || 'none'})`);
    },
  },
  'attach.recorded': {
    setup: async (x) => { for (let k = 0; k < 3; k++) await x.c.ok('create', `a${x.i}-${k}`, '--size', '4M'); },
    act: async (x) => { for (let k = 0; k < 3; k++) await x.c.vdisk('attach', `a${x.i}-${k}`, '--host-id', 'h1'); },
    after: async (x, t) => {
      // The recorded attachment is completed by the restarted controller's reconciliation.
      await x.c.until('the recorded attachment to get its device', async () =>
        (await x.c.json<Array<{ name: string; device: string | null }>>('ls')).some((d) => d.name === `a${x.i}-${x.n - 1}` && d.device !== null));
      const ls = await x.c.json<Array<{ name: string; device: string | null }>>('ls');
      for (const d of ls.filter((e) => e.name.startsWith(`a${x.i}-`) && e.device !== null)) {
        t.ok(readDirect(d.device!, 0, MB).equals(Buffer.alloc(MB)), `${d.name} is served and reads zeros`);
        await x.c.ok('detach', d.name);
      }
    },
  },
  'container.labelled': {
    // Adds that die between their label and their commit: the label is the controller's own (its intent was
    // recorded first), so the same storage is added afterwards, not refused as another controller's.
    act: async (x) => { for (let k = 0; k < 3; k++) await x.c.vdisk('container', 'add', `l${x.i}-${k}`, '--path', `${x.c.dir}/l${x.i}-${k}.img`, '--size', '4M'); },
    after: async (x, t) => {
      for (let k = 0; k < 3; k++) {
        const name = `l${x.i}-${k}`;
        const ls = await x.c.json<Array<{ name: string }>>('container', 'ls');
        if (!ls.some((e) => e.name === name)) await x.c.ok('container', 'add', name, '--path', `${x.c.dir}/${name}.img`, '--size', '4M');
        await x.c.ok('container', 'rm', name);
      }
      t.pass('every storage an interrupted add labelled was added again');
    },
  },
  'migrate.remapped': {
    setup: async (x) => { writeDirect(x.dev, 0, crypto.randomBytes(SIZE)); },
    // To the container the disk is not on (a later pass finds it moved by the first).
    act: async (x) => { await x.c.vdisk('migrate', x.w, '--to', (x.to = 'c2' in (await infoOf(x, x.w)).perContainer ? 'c1' : 'c2')); },
    after: async (x, t) => {
      // The migration resumes by itself after the restart.
      await x.c.until('the migration to finish', async () => Object.keys((await infoOf(x, x.w)).perContainer).every((k) => k === x.to));
      t.pass(`every segment of the disk is on ${x.to}`);
    },
  },
  // The agent's points: the flow restarts the agent armed (recovery reloads tables, then recovers devices).
  // Two devices to recover: the sentinel snapshot's and this run's disk.
  'agent.loaded': { passes: 2, act: async (x) => { await restartAgent(x.c); } },
  // The restarted agent dies between a START_USER_RECOVERY and its queues' FETCHes: 6.12 refuses the next
  // agent's START for that device (EINVAL), and the next agent takes it over without one.
  'agent.recovering': {
    passes: 2,
    act: async (x) => { await restartAgent(x.c); },
    after: async (x, t) => { t.match(x.c.log('agent-h1.log'), /an earlier recovery was abandoned after its START; resuming it/, 'the next agent resumed the abandoned recovery'); },
  },
  'agent.recovered': { passes: 2, act: async (x) => { await restartAgent(x.c); } },
  // The restarted agent dies right after claiming a granted segment: its earlier claims, of writes fio saw
  // complete, are only in its claims file (nothing has asked for more grants yet). The next agent sends
  // them with its registration, and fio's verify reads them back.
  'agent.claimed': { setup: fresh, passes: 2, act: async (x) => { await restartAgent(x.c); } },
  // The agent (restarted armed by arm(), its grants allowing copy-on-write) dies in a queue between writing a
  // whole shared segment to a grant with its claim record and installing the entry: fio's 1 MiB write is not
  // complete. The next agent sends the claim with its registration and the device reissues the write; fio's
  // verify reads every segment back, and the snapshot still reads the old data (check, sentinel).
  'agent.cow-claimed': {
    setup: shared, fioIsTheFlow: true, passes: 2, fio: ['--bs=1M', '--number_ios=4', '--rate_iops=16'], act: async () => {},
    after: async (x, t) => {
      const snap = await x.c.attach(`${x.w}-s${x.i}`);
      t.equal(sha(readDirect(snap, 0, SIZE)), x.snapSha, 'the snapshot reads what was written before it');
      await x.c.ok('detach', `${x.w}-s${x.i}`);
    },
  },
  // Once: with the agent dead, the snapshot waits out its lease before it goes on.
  'agent.blocked': { passes: 1, act: async (x) => { await x.c.vdisk('snapshot', x.w, `${x.w}-b${x.i}`); } },
};

let baseSha = '';

/** The two halves of the matrix, by failpoint name prefix: flows of the data path, then commits and the agent. */
const PARTS = [['staged.', 'batch.', 'sync.', 'thick.', 'grant.'], ['snapshot.', 'clone.', 'migrate.', 'rm.', 'attach.', 'container.', 'agent.']];

/** kill -9 of h1's agent (its devices stay, quiesced) and a new one started with the environment as it is now. */
async function restartAgent(c: Cluster): Promise<void> {
  const pid = await c.agentPid();
  process.kill(pid, 'SIGKILL');
  await c.until('the agent to exit', () => !alive(pid));
  await c.vdisk('agent', 'start', '--host-id', 'h1');
}

/** The process the failpoint lives in, and its pid now. */
async function target(c: Cluster, fp: Failpoint): Promise<{ who: 'controller' | 'agent'; pid: number }> {
  return fp.startsWith('agent.') ? { who: 'agent', pid: await c.agentPid() } : { who: 'controller', pid: await c.controllerPid() };
}

/** Restarts the process the failpoint lives in with it armed at pass n. */
async function arm(c: Cluster, fp: Failpoint, n: number, dev: string): Promise<void> {
  const { who, pid } = await target(c, fp);
  if (who === 'controller') {
    await c.ok('controller', 'stop');
    await c.until('the controller to exit', () => !alive(pid));
  }
  process.env.VDISK_FAILPOINT = `${fp}:${n}`;
  try {
    // The agent is armed by the restart that is its flow (restartAgent), or now for agent.blocked.
    if (who === 'controller') await c.ok('controller', 'start');
    else if (fp === 'agent.blocked' || fp === 'agent.cow-claimed') {
      await restartAgent(c);
      // The new agent has recovered this disk's device (its table exists) once a read through it completes.
      await readDirectAsync(dev, 0, 4096);
    }
  } finally {
    if (who === 'controller' || fp === 'agent.blocked' || fp === 'agent.cow-claimed') delete process.env.VDISK_FAILPOINT;
  }
}

const reached = (c: Cluster, fp: Failpoint, n: number) =>
  new RegExp(`failpoint ${fp.replace('.', '\\.')}:${n} reached`).test(c.log(fp.startsWith('agent.') ? 'agent-h1.log' : 'controller.log'));

t.test('every failpoint, under fio verify', async (t) => {
  // Nothing here reads a freed segment (discards run with fio stopped; copy-on-write frees none): no quarantine.
  // Every controller start (the CLI runs in this process) inherits it.
  process.env.VDISK_QUARANTINE_MS = '0';
  t.teardown(() => { delete process.env.VDISK_QUARANTINE_MS; delete process.env.VDISK_GRANTS; });
  const c = await Cluster.start('vd-crash');
  t.teardown(() => c.stop());
  await c.container('c1', '1G');
  await c.container('c2', '512M');
  await c.ok('agent', 'start', '--host-id', 'h1');
  await c.ok('create', 'base', '--size', '4M', '--container', 'c1');
  const base = crypto.randomBytes(SIZE);
  writeDirect(await c.attach('base'), 0, base);
  await c.ok('detach', 'base');
  baseSha = sha(base);
  await c.ok('snapshot', 'base', 'base-s');
  const sentinel = await c.attach('base-s');
  // One disk for every run, attached once: fio verify writes to it while each flow runs.
  await c.ok('create', 'w', '--size', '4M', '--container', 'c1');
  const dev = await c.attach('w', 'h1', '--queues', '2');
  const rows: string[] = [];
  let i = 0;
  // This file runs part VDISK_CRASH_PART (1 unless crash-matrix-2.test.ts set 2): the halves run side by
  // side in CI. VDISK_CRASH_ONLY=a,b runs the failpoints whose names start with a or b instead (a replay).
  const all = Object.keys(FAILPOINTS) as Failpoint[];
  t.same(all.filter((f) => !PARTS.some((p) => p.some((o) => f.startsWith(o)))), [], 'every failpoint is in a part');
  const replay = process.env.VDISK_CRASH_ONLY?.split(',');
  const only = replay ?? PARTS[Number(process.env.VDISK_CRASH_PART ?? '1') - 1];
  let points = all.filter((f) => only.some((o) => f.startsWith(o)));
  if (!FULL && !replay) {
    const r = rotation();
    t.comment(`CI rotation ${r}: failpoints ${points.filter((_, k) => k % 2 !== r).join(', ')} run on the other parity`);
    points = points.filter((_, k) => k % 2 === r);
  }
  for (const fp of points) {
    for (const n of new Set(PASSES.map((p) => Math.min(p, SCENARIOS[fp].passes ?? 3)))) {
      i++;
      const s = SCENARIOS[fp];
      const x: Ctx = { c, w: 'w', dev, i, n };
      await s.setup?.(x);
      const who = fp.startsWith('agent.') ? 'agent' : 'controller';
      // Part 1's flows are first writes that fault: its controller grants nothing, but for its grant's point.
      if (only.includes('batch.') && !s.grants) process.env.VDISK_GRANTS = '0';
      else delete process.env.VDISK_GRANTS;
      let fio = s.fioIsTheFlow ? undefined : fioVerify(x.dev, '4M', s.fio ?? FIO);
      await arm(c, fp, n, x.dev);
      fio ??= fioVerify(x.dev, '4M', s.fio ?? FIO);
      const { pid } = await target(c, fp).catch(() => ({ pid: 0 }));
      await s.act(x);
      await c.until(`${fp}:${n} to be reached`, () => reached(c, fp, n) || fio.finished());
      const hit = reached(c, fp, n);
      t.ok(hit, `${fp}:${n}: the ${who} died at the failpoint`);
      if (who === 'controller') {
        await c.until('the controller to be gone', () => pid === 0 || !alive(pid));
        await c.ok('controller', 'start');
      } else {
        await c.until('the agent to be gone', async () => !(await c.json<Array<{ hostId: string }>>('agent', 'ls')).some((a) => a.hostId === 'h1'));
        delete process.env.VDISK_FAILPOINT;
        await c.ok('agent', 'start', '--host-id', 'h1');
      }
      const code = await fio.done;
      t.equal(code, 0, `${fp}:${n}: fio finished and verified\n${fio.out()}`);
      // fio may have finished before the crash: the next point must not find the disk's device still being
      // recovered (its restartAgent would kill the agent in the middle of that, a flow it does not mean).
      await readDirectAsync(dev, 0, 4096);
      const check = await c.check();
      t.equal(...check);
      t.equal(sha(readDirect(sentinel, 0, SIZE)), baseSha, `${fp}:${n}: the snapshot taken at the start reads its data`);
      await s.after?.(x, t);
      rows.push(`${`${fp}:${n}`.padEnd(22)} ${who.padEnd(10)} ${hit ? 'died' : 'not hit'}  fio ${code === 0 ? 'verified' : `exit ${code}`}  check ${check[0] === 0 ? 'clean' : 'FAILED'}`);
    }
  }
  t.equal(...(await c.check()));
  t.comment(`crash matrix (${rows.length} crashes):\n${rows.join('\n')}`);
});
