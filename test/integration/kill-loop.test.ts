// Kill loops (issue 12): kill -9 of the agent and of the controller, in turn, at a random moment (a random
// number of completed writes, observed on the device) while fio verify writes to two disks and a churn of
// snapshot, clone, rm and migrate runs; after each kill the process is restarted, fio must finish with no
// error and its verify pass, `vdisk check` must be clean, and a snapshot taken at the start must still read
// its checksum. CI runs 2 kills of each (the seed changes every run); VDISK_TORTURE=full (npm run torture) 20 of each.
import t from 'tap';
import crypto from 'node:crypto';
import { Cluster } from './cluster.js';
import { alive, fioVerify, readDirect, ublkAvailable, writeDirect, writesCompleted } from './helpers.js';

const missing = ublkAvailable();
if (missing) t.fail(`needs a real ublk kernel: ${missing}`);
const MB = 1 << 20;
const KILLS = process.env.VDISK_TORTURE === 'full' ? 20 : 2;
const seed = Number(process.env.VDISK_TORTURE_SEED ?? Date.now() % 1_000_000);
const sha = (b: Buffer) => crypto.createHash('sha256').update(b).digest('hex');

/** A small seeded generator (mulberry32): a failing run can be replayed with VDISK_TORTURE_SEED. */
function prng(s: number): () => number {
  return () => {
    s = (s + 0x6d2b79f5) | 0;
    let x = Math.imul(s ^ (s >>> 15), 1 | s);
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x;
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

t.test(`${KILLS} kills of the agent and ${KILLS} of the controller during fio verify and churn (seed ${seed})`, async (t) => {
  const rand = prng(seed);
  const c = await Cluster.start('vd-kill-loop');
  t.teardown(() => c.stop());
  await c.container('c1', '1G');
  await c.container('c2', '1G');
  await c.ok('agent', 'start', '--host-id', 'h1');
  const disks = ['d1', 'd2'];
  const devs: string[] = [];
  for (const d of disks) {
    await c.ok('create', d, '--size', '8M');
    devs.push(await c.attach(d, 'h1', '--queues', '2'));
  }
  const base = crypto.randomBytes(8 * MB);
  writeDirect(devs[0], 0, base);
  await c.ok('snapshot', 'd1', 'sentinel');
  const sentinel = await c.attach('sentinel');

  // Churn: management requests that may meet a dead controller or agent (their errors are expected then).
  let generation = 0;
  const churned: string[] = [];
  // The disks now; none while the controller is down.
  const names = async () => {
    const r = await c.vdisk('ls', '--json');
    return r.status === 0 ? JSON.parse(r.out) as Array<{ name: string; readOnly: boolean }> : [];
  };
  const churnOnce = async () => {
    const g = generation++;
    const op = Math.floor(rand() * 4);
    if (op === 0) await c.vdisk('snapshot', 'd2', `s${g}`);
    else if (op === 1) {
      const snaps = (await names()).filter((d) => d.readOnly && d.name !== 'sentinel');
      if (snaps.length) await c.vdisk('clone', snaps[Math.floor(rand() * snaps.length)].name, `k${g}`);
    } else if (op === 2) {
      const gone = (await names()).filter((d) => /^[ks]\d+$/.test(d.name));
      if (gone.length) await c.vdisk('rm', gone[Math.floor(rand() * gone.length)].name);
    } else await c.vdisk('migrate', 'd2', '--to', g % 2 === 0 ? 'c2' : 'c1');
    churned.push(['snapshot', 'clone', 'rm', 'migrate'][op]);
  };

  const rows: string[] = [];
  for (let k = 0; k < 2 * KILLS; k++) {
    const who = k % 2 === 0 ? 'agent' : 'controller';
    const jobs = devs.map((dev) => fioVerify(dev, '8M', ['--number_ios=60', '--rate_iops=30']));
    // Three management requests in a row during this round, the kill landing somewhere among them.
    const churn = (async () => { for (let j = 0; j < 3; j++) await churnOnce(); })();
    // A random moment: after a random number of completed writes on d1 (observed, not slept).
    const target = writesCompleted(devs[0]) + 5 + Math.floor(rand() * 40);
    await c.until(`${target} writes on d1`, () => writesCompleted(devs[0]) >= target || jobs[0].finished());
    const pid = who === 'agent' ? await c.agentPid() : await c.controllerPid();
    process.kill(pid, 'SIGKILL');
    await c.until(`the ${who} to die`, () => !alive(pid));
    if (who === 'agent') await c.ok('agent', 'start', '--host-id', 'h1');
    else await c.ok('controller', 'start');
    await churn;
    const codes = await Promise.all(jobs.map((j) => j.done));
    t.same(codes, [0, 0], `kill ${k + 1} (${who}, after write ${target}): fio finished and verified on both disks\n${jobs.map((j) => j.out()).join('\n')}`);
    const check = await c.check();
    t.equal(...check);
    rows.push(`${String(k + 1).padStart(2)} ${who.padEnd(10)} at write ${String(target).padStart(5)}  fio ${codes.join('/')}  check ${check[0] === 0 ? 'clean' : 'FAILED'}`);
  }
  t.equal(sha(readDirect(sentinel, 0, 8 * MB)), sha(base), 'the sentinel snapshot still reads its data');
  t.equal(...(await c.check()));
  t.comment(`kill loop, seed ${seed}: ${2 * KILLS} kills, churn ${churned.length} requests (${['snapshot', 'clone', 'rm', 'migrate'].map((o) => `${churned.filter((x) => x === o).length} ${o}`).join(', ')})\n${rows.join('\n')}`);
});
