// The block devices the VM benchmarks compare, each started over a backing file and stopped again: `vdisk
// loop` (the real binary), the kernel's loop device and, when built (VDISK_BENCH_UBLKSRV names its `ublk`
// program), the C server ublksrv's loop target. Each says whether it really does direct I/O.
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { VdiskError } from '../errors.js';
import { sh } from './exec.js';
import { CLI_MAIN } from './session.js';

export interface Served { dev: string; direct: boolean | null; queues: number | null; stop(): Promise<void> }

interface LoopJson { device: string; queues: number; depth: number; segmentSize: number; direct: boolean }

/** `vdisk loop FILE --json`; resolves once the device is live. */
export async function startVdiskLoop(file: string, queues: number, depth: number, env?: NodeJS.ProcessEnv): Promise<Served & { info: LoopJson }> {
  const proc = spawn(process.execPath, [CLI_MAIN, 'loop', file, '--queues', String(queues), '--depth', String(depth), '--json'],
    { env: env ?? process.env, stdio: ['ignore', 'pipe', 'inherit'] });
  const line = await new Promise<string>((resolve, reject) => {
    let out = '';
    proc.stdout.on('data', (d: Buffer) => { out += d.toString(); if (out.includes('\n')) resolve(out.split('\n')[0]!); });
    proc.once('exit', (c) => reject(new VdiskError(`vdisk loop exited ${c}`, { code: 'EIO' })));
  });
  const info = JSON.parse(line) as LoopJson;
  return {
    dev: info.device, info, direct: info.direct, queues: info.queues,
    stop: () => new Promise<void>((r) => { proc.once('exit', () => r()); proc.kill('SIGTERM'); }),
  };
}

/** `losetup --direct-io=on` (the kernel falls back to buffered I/O where the file system refuses O_DIRECT). */
export function startKernelLoop(file: string): Served {
  const dev = sh('losetup', ['--direct-io=on', '-f', '--show', file]).trim();
  const dioFile = `/sys/block/${path.basename(dev)}/loop/dio`;
  const direct = fs.existsSync(dioFile) ? fs.readFileSync(dioFile, 'utf8').trim() === '1' : null;
  return { dev, direct, queues: null, stop: async () => { sh('losetup', ['-d', dev]); } };
}

/** The ublksrv `ublk` program, if one was built and named; undefined: skip its rows. */
export function ublksrvProgram(): string | undefined {
  const p = process.env.VDISK_BENCH_UBLKSRV;
  return p && fs.existsSync(p) ? p : undefined;
}

const ublkDevices = () => new Set(fs.readdirSync('/dev').filter((n) => /^ublkb\d+$/.test(n)));

/** ublksrv's loop target over FILE (direct I/O unless --buffered_io), one queue of `depth`. */
export async function startUblksrvLoop(prog: string, file: string, queues: number, depth: number): Promise<Served> {
  const before = ublkDevices();
  const r = spawnSync(prog, ['add', '-t', 'loop', '-f', file, '-q', String(queues), '-d', String(depth)], { encoding: 'utf8' });
  if (r.status !== 0) throw new VdiskError(`ublksrv add exited ${r.status}: ${r.stderr.trim()} ${r.stdout.trim()}`, { code: 'EIO' });
  const m = /dev id (\d+)/.exec(r.stdout);
  const name = m ? `ublkb${m[1]}` : [...ublkDevices()].find((n) => !before.has(n));
  if (!name) throw new VdiskError(`ublksrv add printed no device: ${r.stdout.trim()}`, { code: 'EIO' });
  const id = name.slice('ublkb'.length);
  // `add` returns once the daemon has started the device; its block device node follows from udev-less devtmpfs.
  const dev = `/dev/${name}`;
  for (let i = 0; i < 200 && !fs.existsSync(dev); i++) await new Promise((res) => setTimeout(res, 50));
  if (!fs.existsSync(dev)) throw new VdiskError(`ublksrv: ${dev} did not appear`, { code: 'ENOENT' });
  return {
    dev, direct: true, queues,
    stop: async () => { sh(prog, ['del', '-n', id]); },
  };
}
