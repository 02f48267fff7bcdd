// Runs test files (compiled JavaScript: each is a plain `node FILE` printing TAP through the tap library),
// several at once, and prints each file's TAP as one subtest when it ends (as tap's runner does), then a
// per-file time table and tap's closing "# { total, pass, fail }" line. No per-file loader or transpile.
// With --isolate (the integration tests, run as root in the test VM): each file gets its own work dir and
// tag, and afterwards must have left nothing behind: no process, mount, loop or dm device, ublk device (nor,
// at the end, a network namespace or NBD device of src/bench/netns.ts).
//
//   node scripts/run-tests.mjs [--jobs N] [--timeout SECONDS] [--isolate] FILE...
import { spawn, spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { TapResults } from './tap-results.mjs';

const args = process.argv.slice(2);
let jobs = 1;
let timeoutSec = 900;
let isolate = false;
const files = [];
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--jobs') jobs = Number(args[++i]);
  else if (args[i] === '--timeout') timeoutSec = Number(args[++i]);
  else if (args[i] === '--isolate') isolate = true;
  else files.push(args[i]);
}
if (!files.length || !(jobs >= 1) || !(timeoutSec >= 1)) {
  console.error('usage: node scripts/run-tests.mjs [--jobs N] [--timeout SECONDS] [--isolate] FILE...');
  process.exit(2);
}

const results = new TapResults();
const baseWork = process.env.VDISK_TEST_DIR ?? os.tmpdir();
const times = [];
const running = new Set();
/** ublk devices that appeared during a file and were not in use when it ended: judged when nothing else runs. */
const suspects = [];
const started = Date.now();
let point = 0;

console.log('TAP version 14');
const queue = [...files];
await Promise.all(Array.from({ length: Math.min(jobs, files.length) }, async () => {
  while (queue.length) await runFile(queue.shift());
}));
if (isolate) {
  await judgeSuspects(true);
  networkLeftovers();
}
printTable();
const t = results.totals();
console.log(`1..${point}`);
console.log(`# { total: ${t.total}, pass: ${t.pass}, fail: ${t.fail}, skip: ${t.skip} }`);
console.log(`# time=${Date.now() - started}ms`);
process.exit(t.fail > 0 || [...results.files.values()].some((r) => !r.ok) ? 1 : 0);

async function runFile(file) {
  const tag = `${path.basename(file).replace(/\.test\.[mc]?js$/, '')}-${crypto.randomBytes(3).toString('hex')}`;
  // tap's own per-test timeout (30 s by default) would cut long real-kernel tests short: the runner's
  // per-file timeout is the one limit.
  const env = { ...process.env, VDISK_TEST_TAG: tag, TAP_TIMEOUT: String(timeoutSec) };
  let work;
  if (isolate) {
    work = path.join(baseWork, tag);
    fs.mkdirSync(work, { recursive: true });
    env.VDISK_TEST_DIR = work;
  }
  const before = isolate ? new Set(ublkDevices()) : new Set();
  const entry = { file, tag };
  running.add(entry);
  const t0 = Date.now();
  const child = spawn(process.execPath, ['--enable-source-maps', file], { env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  let out = '';
  let err = '';
  child.stdout.on('data', (d) => { out += d; });
  child.stderr.on('data', (d) => { err += d; });
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    try { process.kill(-child.pid, 'SIGKILL'); } catch { /* already gone */ }
  }, timeoutSec * 1000);
  const code = await new Promise((resolve) => child.once('close', (c, sig) => resolve(c ?? sig)));
  clearTimeout(timer);
  const ms = Date.now() - t0;
  running.delete(entry);

  const extra = [];
  if (timedOut) extra.push(`timed out after ${timeoutSec} s`);
  else if (code !== 0) extra.push(`exited with ${code}`);
  if (isolate) {
    // A file killed at its timeout printed nothing of why: the last lines of the daemons' logs it left.
    if (timedOut) out += logTails(work);
    extra.push(...leftovers(tag, work));
    const now = ublkDevices().filter((d) => !before.has(d) && !heldOpen().has(d));
    if (now.length) suspects.push({ file, devices: now });
    fs.rmSync(work, { recursive: true, force: true });
  }
  report(file, out, err, extra, ms);
  if (isolate) await judgeSuspects(false);
}

/** The last lines of every *.log under dir (a few levels down), as TAP comments. */
function logTails(dir, depth = 3) {
  let text = '';
  let entries = [];
  try { entries = fs.readdirSync(dir, { withFileTypes: true }); } catch { return ''; }
  for (const e of entries) {
    const p = path.join(dir, e.name);
    if (e.isDirectory() && depth > 0) text += logTails(p, depth - 1);
    else if (e.isFile() && e.name.endsWith('.log')) {
      const tail = fs.readFileSync(p, 'utf8').trimEnd().split('\n').slice(-30);
      text += `\n# --- ${p} (last ${tail.length} lines):\n${tail.map((l) => `# ${l}`).join('\n')}\n`;
    }
  }
  return text;
}

/** Prints the file's TAP as one indented subtest, with the runner's own findings as failed points. */
function report(file, out, err, problems, ms) {
  const lines = out.split('\n').filter((l) => l !== '' && !/^TAP version/.test(l));
  problems.forEach((p) => lines.push(`not ok - ${p}`));
  if (problems.length && err.trim()) lines.push(...err.trim().split('\n').slice(-40).map((l) => `# stderr: ${l}`));
  // A plan line must stay last: move the file's own plan below the runner's additions.
  const plan = lines.findIndex((l) => /^1\.\.\d+/.test(l));
  if (plan >= 0 && problems.length) {
    const [p] = lines.splice(plan, 1);
    lines.push(p.replace(/^1\.\.(\d+)/, (_, n) => `1..${Number(n) + problems.length}`));
  }
  const before = results.files.size;
  let text = `# Subtest: ${file}\n${lines.map((l) => `    ${l}`).join('\n')}\n`;
  results.push(text);
  const counts = { pass: 0, fail: 0 };
  // Whether the file passed: tap's own verdict (exit status) and no failed point anywhere in it.
  const ok = problems.length === 0 && !/^\s*not ok /m.test(lines.join('\n'));
  text += `${ok ? 'ok' : 'not ok'} ${++point} - ${file} # time=${ms}ms\n`;
  results.push(`${ok ? 'ok' : 'not ok'} ${point} - ${file} # time=${ms}ms\n`);
  if (results.files.size === before) console.error(`run-tests: could not read the TAP of ${file}`);
  Object.assign(counts, results.files.get(file) ?? {});
  times.push({ file, ms, ok, pass: counts.pass, fail: counts.fail });
  process.stdout.write(text);
}

function printTable() {
  const w = Math.max(4, ...times.map((x) => x.file.length));
  console.log(`# ${'file'.padEnd(w)}  ${'seconds'.padStart(8)}  ${'pass'.padStart(5)}  ${'fail'.padStart(5)}`);
  for (const x of [...times].sort((a, b) => b.ms - a.ms)) {
    console.log(`# ${x.file.padEnd(w)}  ${(x.ms / 1000).toFixed(1).padStart(8)}  ${String(x.pass).padStart(5)}  ${String(x.fail).padStart(5)}${x.ok ? '' : '  FAILED'}`);
  }
  console.log(`# ${'all files, wall clock'.padEnd(w)}  ${((Date.now() - started) / 1000).toFixed(1).padStart(8)}  (${jobs} at a time)`);
}

// ---- isolation (root, in the test VM) ----

/** What the file left behind, cleaned up so that later files find the guest as it was. */
function leftovers(tag, work) {
  const found = [];
  const procs = taggedProcesses(tag);
  if (procs.length) {
    found.push(`left processes behind: ${procs.map((p) => `${p.pid} (${p.cmd})`).join(', ')}`);
    for (const p of procs) try { process.kill(p.pid, 'SIGKILL'); } catch { /* gone */ }
  }
  const mounts = fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n').map((l) => l.split(' ')[4])
    .filter((m) => m && (m === work || m.startsWith(`${work}/`)));
  for (const m of mounts.reverse()) {
    found.push(`left ${m} mounted`);
    spawnSync('umount', ['-l', m]);
  }
  const loops = loopDevices().filter((l) => l.backing.startsWith(`${work}/`));
  const loopNames = new Set(loops.map((l) => l.name));
  for (const dm of dmDevices().filter((d) => d.slaves.some((s) => loopNames.has(s)))) {
    found.push(`left device-mapper device ${dm.name}`);
    spawnSync('dmsetup', ['remove', '--force', dm.name], { env: { ...process.env, DM_DISABLE_UDEV: '1' } });
  }
  for (const l of loops) {
    found.push(`left /dev/${l.name} (${l.backing})`);
    spawnSync('losetup', ['-d', `/dev/${l.name}`]);
  }
  return found;
}

/**
 * The multi-host topologies of src/bench/netns.ts (namespaces vdnN-*, NBD devices): each file tears its
 * own down, but their names say nothing of the file, so what is left is only judged, and removed, at the end.
 */
function networkLeftovers() {
  const found = [];
  let names = [];
  try {
    names = fs.readdirSync('/run/netns').filter((n) => /^vdn\d+-/.test(n));
  } catch { /* no namespace was ever made */ }
  let nbds = [];
  // Only in the test VM: on a host the NBD devices may be somebody else's.
  if (process.env.VDISK_IN_VM === '1') try {
    nbds = fs.readdirSync('/sys/block').filter((d) => /^nbd\d+$/.test(d) && fs.existsSync(`/sys/block/${d}/pid`));
  } catch { /* no /sys/block */ }
  for (const d of nbds) {
    found.push(`/dev/${d} connected`);
    spawnSync('nbd-client', ['-d', `/dev/${d}`]);
  }
  for (const n of names) {
    found.push(`network namespace ${n}`);
    spawnSync('ip', ['netns', 'del', n]);
  }
  if (!found.length) return;
  const text = `# Subtest: isolation after all files\n    not ok 1 - left behind: ${found.join(', ')}\n    1..1\n`;
  results.push(text);
  results.push(`not ok ${++point} - isolation after all files\n`);
  process.stdout.write(`${text}not ok ${point} - isolation after all files\n`);
  times.push({ file: 'isolation after all files', ms: 0, ok: false, pass: 0, fail: 1 });
}

/** Devices that appeared during a file, are in nobody's hands and are still there once no other file runs. */
async function judgeSuspects(final) {
  if (!suspects.length || (running.size > 0 && !final)) return;
  const present = new Set(ublkDevices());
  const held = heldOpen();
  for (const s of suspects.splice(0)) {
    const left = s.devices.filter((d) => present.has(d) && !held.has(d));
    if (!left.length) continue;
    const text = `# Subtest: isolation after ${s.file}\n    not ok 1 - left ublk devices behind: ${left.map((d) => `/dev/ublkb${d}`).join(', ')}\n    1..1\n`;
    results.push(text);
    results.push(`not ok ${++point} - isolation after ${s.file}\n`);
    process.stdout.write(`${text}not ok ${point} - isolation after ${s.file}\n`);
    times.push({ file: `isolation after ${s.file}`, ms: 0, ok: false, pass: 0, fail: 1 });
    for (const d of left) await deleteDevice(d);
  }
}

/** DEL_DEV of a device nobody serves, so that later files find the kernel as it was. */
async function deleteDevice(devId) {
  try {
    const { UblkControlDevice } = await import(new URL('../dist-test/src/ublk/control.js', import.meta.url).href);
    const control = UblkControlDevice.open();
    try {
      await control.delDev(devId);
    } finally {
      control.close();
    }
  } catch (e) {
    console.error(`run-tests: could not delete /dev/ublkb${devId}: ${e.message}`);
  }
}

function ublkDevices() {
  try {
    return fs.readdirSync('/sys/class/ublk-char').map((n) => Number(n.replace('ublkc', ''))).filter(Number.isInteger);
  } catch {
    return [];
  }
}

/** ublk device ids whose /dev/ublkcN some process holds open (a server serving it). */
function heldOpen() {
  const held = new Set();
  for (const pid of fs.readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    let fds = [];
    try { fds = fs.readdirSync(`/proc/${pid}/fd`); } catch { continue; }
    for (const fd of fds) {
      try {
        const m = /^\/dev\/ublkc(\d+)$/.exec(fs.readlinkSync(`/proc/${pid}/fd/${fd}`));
        if (m) held.add(Number(m[1]));
      } catch { /* closed meanwhile */ }
    }
  }
  return held;
}

function taggedProcesses(tag) {
  const found = [];
  const needle = `VDISK_TEST_TAG=${tag}\0`;
  for (const pid of fs.readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    try {
      if (!`${fs.readFileSync(`/proc/${pid}/environ`, 'latin1')}\0`.includes(needle)) continue;
      const stat = fs.readFileSync(`/proc/${pid}/stat`, 'latin1');
      if (/\) Z /.test(stat)) continue; // a zombie holds nothing
      found.push({ pid: Number(pid), cmd: fs.readFileSync(`/proc/${pid}/cmdline`, 'latin1').split('\0').join(' ').trim().slice(0, 120) });
    } catch { /* exited meanwhile */ }
  }
  return found;
}

function loopDevices() {
  const found = [];
  for (const name of fs.readdirSync('/sys/block').filter((n) => n.startsWith('loop'))) {
    try {
      found.push({ name, backing: fs.readFileSync(`/sys/block/${name}/loop/backing_file`, 'utf8').trim() });
    } catch { /* not bound */ }
  }
  return found;
}

function dmDevices() {
  const found = [];
  for (const name of fs.readdirSync('/sys/block').filter((n) => n.startsWith('dm-'))) {
    try {
      found.push({ name: fs.readFileSync(`/sys/block/${name}/dm/name`, 'utf8').trim(), slaves: fs.readdirSync(`/sys/block/${name}/slaves`) });
    } catch { /* removed meanwhile */ }
  }
  return found;
}
