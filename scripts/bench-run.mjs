// The benchmark body, run where ublk exists (inside the VM for `npm run bench`): builds one backing file,
// then alternates fio runs on `vdisk loop` and on a kernel loop device over it, so drift hits both alike.
// Then the controller benchmarks (bench-controller.mjs), which reuse that file as a thick disk's container, and
// the snapshot benchmarks (bench-snapshot.mjs), which use it as the data of a snapshotted and cloned disk.
// Usage: bench-run.mjs OUT.json [--runtime S] [--rounds N] [--faults N] [--cows N] [--no-controller] [--no-snapshot]
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { controllerBench, printController } from './bench-controller.mjs';
import { printSnapshot, snapshotBench } from './bench-snapshot.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const [outFile, ...rest] = process.argv.slice(2);
const opt = (name, def) => { const i = rest.indexOf(name); return i >= 0 ? Number(rest[i + 1]) : def; };
const runtime = opt('--runtime', 20);
const rounds = opt('--rounds', 2);
// Map faults to take at each queue depth: 256, fewer for a quick check with a short --runtime.
const faults = opt('--faults', Math.min(256, Math.max(32, runtime * 16)));
const withController = !rest.includes('--no-controller');
// First writes after a snapshot (copy-on-write faults) at each queue depth.
const cows = opt('--cows', faults);
const withSnapshot = !rest.includes('--no-snapshot');
const dir = process.env.VDISK_TEST_DIR ?? os.tmpdir();
const file = path.join(dir, 'bench-backing.img');
const SIZE_MB = 1024;

function sh(cmd, args) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 64 << 20 });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

function fio(dev, rw) {
  const out = sh('fio', [`--name=${rw}`, `--filename=${dev}`, `--rw=${rw}`, '--bs=4k', '--iodepth=32', '--numjobs=1',
    '--ioengine=libaio', '--direct=1', '--time_based', `--runtime=${runtime}`, '--ramp_time=3', '--norandommap',
    '--randrepeat=0', '--output-format=json']);
  const job = JSON.parse(out.slice(out.indexOf('{'))).jobs[0];
  const side = rw === 'randread' ? job.read : job.write;
  return { iops: side.iops, clatP50us: side.clat_ns.percentile['50.000000'] / 1000, clatP99us: side.clat_ns.percentile['99.000000'] / 1000 };
}

async function startVdisk() {
  const proc = spawn(process.execPath, [path.join(root, 'dist', 'cli', 'main.js'), 'loop', file, '--json'], { stdio: ['ignore', 'pipe', 'inherit'] });
  const line = await new Promise((resolve, reject) => {
    let out = '';
    proc.stdout.on('data', (d) => { out += d; if (out.includes('\n')) resolve(out.split('\n')[0]); });
    proc.once('exit', (c) => reject(new Error(`vdisk loop exited ${c}`)));
  });
  const info = JSON.parse(line);
  return { dev: info.device, info, stop: () => new Promise((r) => { proc.once('exit', r); proc.kill('SIGTERM'); }) };
}

console.error(`bench: writing a ${SIZE_MB} MiB backing file in ${dir}`);
sh('dd', ['if=/dev/urandom', `of=${file}`, 'bs=1M', `count=${SIZE_MB}`, 'oflag=direct', 'status=none']);
const results = { vdisk: { randread: [], randwrite: [] }, kernelLoop: { randread: [], randwrite: [] } };
let vdiskInfo;
for (let round = 0; round < rounds; round++) {
  for (const rw of ['randread', 'randwrite']) {
    const v = await startVdisk();
    vdiskInfo = v.info;
    results.vdisk[rw].push(fio(v.dev, rw));
    await v.stop();
    const loop = sh('losetup', ['--direct-io=on', '-f', '--show', file]).trim();
    try {
      results.kernelLoop[rw].push(fio(loop, rw));
    } finally {
      sh('losetup', ['-d', loop]);
    }
    console.error(`bench: round ${round + 1} ${rw}: vdisk ${results.vdisk[rw].at(-1).iops.toFixed(0)} IOPS, ` +
      `kernel loop ${results.kernelLoop[rw].at(-1).iops.toFixed(0)} IOPS`);
  }
}

let controller;
let controllerError;
if (withController) {
  try {
    controller = await controllerBench({ root, dir, file, runtime, rounds, faults, fio, sh, log: (m) => console.error(`bench: ${m}`) });
  } catch (err) {
    controllerError = err;
    console.error(`bench: the controller part failed: ${err.stack ?? err}`);
  }
}
let snapshot;
let snapshotError;
if (withSnapshot) {
  try {
    snapshot = await snapshotBench({ root, dir, file, runtime, rounds, cows, fio, sh, log: (m) => console.error(`bench: ${m}`),
      cliStartupMs: controller?.cliStartupMs?.median });
  } catch (err) {
    snapshotError = err;
    console.error(`bench: the snapshot part failed: ${err.stack ?? err}`);
  }
}
fs.rmSync(file, { force: true });

const mean = (xs) => xs.reduce((a, b) => a + b, 0) / xs.length;
const summary = {};
for (const rw of ['randread', 'randwrite']) {
  const v = mean(results.vdisk[rw].map((r) => r.iops));
  const k = mean(results.kernelLoop[rw].map((r) => r.iops));
  summary[rw] = { vdiskIops: Math.round(v), kernelLoopIops: Math.round(k), ratio: Number((v / k).toFixed(3)) };
}
const report = {
  date: new Date().toISOString(), kernel: os.release(), cpus: os.cpus().length, inVm: process.env.VDISK_IN_VM === '1',
  fio: { bs: '4k', iodepth: 32, numjobs: 1, ioengine: 'libaio', direct: 1, runtime, rounds },
  vdisk: { queues: vdiskInfo.queues, depth: vdiskInfo.depth, direct: vdiskInfo.direct }, summary, runs: results,
  controller: controller ?? (controllerError ? { error: String(controllerError.message ?? controllerError) } : undefined),
  snapshot: snapshot ?? (snapshotError ? { error: String(snapshotError.message ?? snapshotError) } : undefined),
};
fs.writeFileSync(outFile, JSON.stringify(report, null, 2) + '\n');
const targets = { randread: 0.7, randwrite: 0.5 };
console.log('\nworkload    vdisk loop IOPS   kernel loop IOPS   ratio   target');
for (const rw of ['randread', 'randwrite']) {
  const s = summary[rw];
  console.log(`${rw.padEnd(10)}  ${String(s.vdiskIops).padStart(15)}   ${String(s.kernelLoopIops).padStart(16)}   ${s.ratio.toFixed(2).padStart(5)}   >= ${targets[rw]}`);
}
if (controller) printController(controller);
if (snapshot) printSnapshot(snapshot);
console.log(`\n(${report.inVm ? 'QEMU TCG VM: absolute IOPS mean nothing, the ratios do' : 'native kernel'}; JSON: ${outFile})`);
if (controllerError || snapshotError) process.exit(1);
