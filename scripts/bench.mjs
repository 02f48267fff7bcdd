// `npm run bench`: fio 4k randread/randwrite (QD 32, 1 job, libaio, direct) on `vdisk loop` and on the
// kernel's loop device (losetup --direct-io=on) over the same backing file, in one VM run (or natively on
// a ublk host). Prints a table with the ratios and writes the JSON to bench-results/. Then the controller
// benchmarks (scripts/bench-controller.mjs); when they run in the VM, their ublk-free part (create, attach
// without device start, controller-side faults) also runs natively here first, where times mean something.
// The snapshot benchmarks (scripts/bench-snapshot.mjs) likewise: their ublk-free part (snapshot requests with a
// stand-in agent attached, controller-side copy-on-write, clone chains) always runs natively here first.
// The controller's event-loop stalls per management operation on a 1 TiB thick disk (src/bench/stalls.ts) run
// natively here too (--no-stalls skips them).
// Options: --runtime S, --rounds N (fio), --faults N (map faults per queue depth), --cows N (first writes after a
// snapshot per queue depth), --snapshot-thick GiB (the host part's thick disk, default 1024), --no-controller, --no-snapshot.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { hostTableBench, printHost } from './bench-controller.mjs';
import { hostSnapshotBench, printSnapshotHost } from './bench-snapshot.mjs';
import { ensureTools } from './ensure-tools.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const outDir = path.join(root, 'bench-results');
fs.mkdirSync(outDir, { recursive: true });
const outFile = path.join(outDir, `bench-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
ensureTools();

const inner = [process.execPath, path.join(root, 'scripts', 'bench-run.mjs'), outFile, ...process.argv.slice(2)];
const native = fs.existsSync('/dev/ublk-control') && process.getuid?.() === 0 && !process.env.VDISK_FORCE_VM;
const cmd = native ? inner : [path.join(root, 'scripts', 'vm', 'run'), '--scratch', '4G', '--smp', '2', '--timeout', '3000',
  '--out', outDir, '--', path.join(root, 'scripts', 'in-vm.sh'), ...inner];
const args = process.argv.slice(2);
let host;
if (!native && !args.includes('--no-controller')) {
  const i = args.indexOf('--faults');
  try {
    host = await hostTableBench({ root, faults: i >= 0 ? Number(args[i + 1]) : 256, log: (m) => console.error(`bench: ${m}`) });
  } catch (err) {
    host = { error: String(err.message ?? err) };
    console.error(`bench: the host part of the controller benchmarks failed: ${err.stack ?? err}`);
  }
}
let snap;
if (!args.includes('--no-snapshot')) {
  const opt = (name, def) => { const i = args.indexOf(name); return i >= 0 ? Number(args[i + 1]) : def; };
  try {
    snap = await hostSnapshotBench({ root, cows: opt('--cows', 64), thickGiB: opt('--snapshot-thick', undefined), log: (m) => console.error(`bench: ${m}`) });
  } catch (err) {
    snap = { error: String(err.message ?? err) };
    console.error(`bench: the host part of the snapshot benchmarks failed: ${err.stack ?? err}`);
  }
}
let stalls;
if (!args.includes('--no-stalls')) {
  try {
    const { stallBench } = await import(pathToFileURL(path.join(root, 'dist', 'bench', 'stalls.js')).href);
    stalls = await stallBench({ log: (m) => console.error(`bench: ${m}`) });
  } catch (err) {
    stalls = { error: String(err.message ?? err) };
    console.error(`bench: the stall benchmark failed: ${err.stack ?? err}`);
  }
}
const r = spawnSync(cmd[0], cmd.slice(1), { stdio: 'inherit', cwd: root });
if ((host || snap || stalls) && fs.existsSync(outFile)) {
  const report = JSON.parse(fs.readFileSync(outFile, 'utf8'));
  if (stalls) report.stalls = stalls;
  if (host) report.controller = { ...report.controller, hostNative: host };
  if (snap) report.snapshot = { ...report.snapshot, hostNative: snap };
  fs.writeFileSync(outFile, JSON.stringify(report, null, 2) + '\n');
}
if (host && !host.error) printHost(host);
if (snap && !snap.error) printSnapshotHost(snap);
if (stalls && !stalls.error) (await import(pathToFileURL(path.join(root, 'dist', 'bench', 'stalls.js')).href)).printStalls(stalls);
process.exit(r.status !== 0 ? (r.status ?? 1) : host?.error || snap?.error || stalls?.error ? 1 : 0);
