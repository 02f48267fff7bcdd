// Helpers for tests that need a real ublk kernel (run natively as root, or inside the VM by
// scripts/integration.mjs): start `vdisk loop` as a child process, run system tools, make backing files.
// Integration tests fail, never skip, when ublk is missing: the runner only starts them where it exists.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { UblkControlDevice } from '../../src/ublk/control.js';

// The tests run compiled (dist-test/test/...), beside the compiled sources they test: the `vdisk` binary
// spawned here is the same code as the in-process CLI of test/support/cli.ts.
export const CLI = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));
/** This test file's own directory for backing files (the harness gives each file one and checks it after). */
export const WORK = process.env.VDISK_TEST_DIR ?? os.tmpdir();

/** Whether a process exists (signal 0). */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export function ublkAvailable(): string | undefined {
  if (!fs.existsSync('/dev/ublk-control')) return '/dev/ublk-control does not exist';
  if (process.getuid?.() !== 0) return 'not root';
  if (!fs.existsSync(CLI)) return `${CLI} is not built (npm run build)`;
  return undefined;
}

export interface Served {
  device: string;
  devId: number;
  queues: number;
  proc: ChildProcess;
  stderr: () => string;
  /** Sends the signal and resolves with the exit code once the process is gone. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

export function vdisk(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 60_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Starts `vdisk loop FILE ARGS --json` and waits for the device line. */
export function serveLoop(file: string, args: string[] = []): Promise<Served> {
  const proc = spawn(process.execPath, [CLI, 'loop', file, '--json', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  proc.stderr!.on('data', (d) => { err += d; });
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
  return new Promise<Served>((resolve, reject) => {
    const timer = setTimeout(() => { proc.kill('SIGKILL'); reject(new Error(`vdisk loop did not start: ${err}`)); }, 120_000);
    proc.stdout!.on('data', (d) => {
      out += d;
      const nl = out.indexOf('\n');
      if (nl < 0) return;
      clearTimeout(timer);
      const info = JSON.parse(out.slice(0, nl)) as { device: string; devId: number; queues: number };
      resolve({
        device: info.device, devId: info.devId, queues: info.queues, proc, stderr: () => err,
        async stop(signal: NodeJS.Signals = 'SIGTERM') {
          proc.kill(signal);
          return exited;
        },
      });
    });
    proc.once('exit', (code) => { clearTimeout(timer); reject(new Error(`vdisk loop exited with ${code}: ${err}`)); });
  });
}

/**
 * Whether ublk device devId exists and one of `pids` serves it (or served it last). Its path alone does not
 * say: files running beside this one may have been given the same id once it was deleted.
 */
export async function ublkServedBy(devId: number, pids: Array<number | undefined>): Promise<boolean> {
  const control = UblkControlDevice.open();
  try {
    const info = await control.getDevInfo(devId);
    return pids.includes(info.ublksrvPid);
  } catch {
    return false; // ENODEV: gone
  } finally {
    control.close();
  }
}

/** Runs a command, throwing with its output when it fails. */
export function run(cmd: string, args: string[], opts: { input?: string; timeout?: number } = {}): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: opts.timeout ?? 600_000, input: opts.input, maxBuffer: 64 << 20 });
  if (r.error) throw r.error;
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.status}:\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

export function makeFile(name: string, size: number): string {
  fs.mkdirSync(WORK, { recursive: true });
  const file = path.join(WORK, `${name}-${process.pid}-${crypto.randomBytes(3).toString('hex')}.img`);
  fs.writeFileSync(file, '');
  fs.truncateSync(file, size);
  return file;
}

export function sha256(file: string): string {
  return crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex');
}

// dd moves up to 1 MiB per request: at 4 KiB per request a few MiB took seconds per call under emulation,
// most of some test files' time. A test that needs small requests says so (`bs=4096` in extra).
// The block size divides the length: GNU dd writes a short last block without O_DIRECT, through the page
// cache, which then reaches the device later with a FLUSH of its own.
const DD_BS = 1 << 20;
const ddBs = (len: number) => Math.min(DD_BS, len & -len || DD_BS);
const ddRead = (file: string, off: number, len: number) =>
  ['dd', `if=${file}`, `bs=${ddBs(len)}`, `skip=${off}`, `count=${len}`, 'iflag=direct,skip_bytes,count_bytes', 'status=none'];
function ddWrite(file: string, off: number, len: number, extra: string[] = []): string[] {
  const bs = extra.find((f) => f.startsWith('bs=')) ?? `bs=${ddBs(len)}`;
  const oflag = ['direct', 'seek_bytes', ...extra.filter((f) => !f.includes('='))].join(',');
  // fullblock: a pipe hands dd short reads, and a short block is a write through the page cache (above).
  return ['dd', `of=${file}`, bs, `seek=${off}`, `oflag=${oflag}`, 'iflag=fullblock', 'conv=notrunc', 'status=none',
    ...extra.filter((f) => f.startsWith('conv=')).map((f) => f.replace('conv=', 'conv=notrunc,'))];
}

/** Reads `len` bytes at `off` (4 KiB aligned) with O_DIRECT, bypassing any page cache. */
export function readDirect(file: string, off: number, len: number): Buffer {
  const [cmd, ...args] = ddRead(file, off, len);
  const r = spawnSync(cmd!, args, { maxBuffer: len + 4096 });
  if (r.status !== 0) throw new Error(`dd read of ${file} failed: ${r.stderr}`);
  return r.stdout;
}

/** Writes `data` at `off` (4 KiB aligned) with O_DIRECT; extra dd flags (e.g. "dsync", "conv=fsync", "bs=4096"). */
export function writeDirect(file: string, off: number, data: Buffer, extra: string[] = []): void {
  const [cmd, ...args] = ddWrite(file, off, data.length, extra);
  const r = spawnSync(cmd!, args, { input: data });
  if (r.status !== 0) throw new Error(`dd write to ${file} failed: ${r.stderr}`);
}

export function mkdtemp(prefix: string): string {
  return fs.mkdtempSync(path.join(WORK, prefix));
}

/**
 * Like run(), without blocking the event loop: needed when this process serves the device itself and its
 * main thread must stay free to answer faults while the command does I/O.
 */
export function runAsync(cmd: string, args: string[], input?: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    let err = '';
    child.stdout!.on('data', (d: Buffer) => out.push(d));
    child.stderr!.on('data', (d) => { err += d; });
    child.once('error', reject);
    child.once('close', (code) => (code === 0 ? resolve(Buffer.concat(out)) : reject(new Error(`${cmd} ${args.join(' ')} exited ${code}: ${err}`))));
    child.stdin!.end(input);
  });
}

export function writeDirectAsync(file: string, off: number, data: Buffer, extra: string[] = []): Promise<Buffer> {
  const [cmd, ...args] = ddWrite(file, off, data.length, extra);
  return runAsync(cmd!, args, data);
}

export function readDirectAsync(file: string, off: number, len: number): Promise<Buffer> {
  const [cmd, ...args] = ddRead(file, off, len);
  return runAsync(cmd!, args);
}

/** Requests the block layer holds in flight on a device now (/sys/block/X/inflight): observed, not timed. */
export function inflight(dev: string): { reads: number; writes: number } {
  const [reads, writes] = fs.readFileSync(`/sys/block/${path.basename(dev)}/inflight`, 'utf8').trim().split(/\s+/).map(Number);
  return { reads, writes };
}

/** Completed write requests of a device since it appeared (/sys/block/X/stat, field 5). */
export function writesCompleted(dev: string): number {
  return Number(fs.readFileSync(`/sys/block/${path.basename(dev)}/stat`, 'utf8').trim().split(/\s+/)[4]);
}

/** Polls a condition that other processes bring about; the condition, not the time, is the proof. */
export async function waitFor(what: string, cond: () => boolean | Promise<boolean>, timeoutMs = 120_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

/** A promise with a synchronous view of whether it has settled. */
export function tracked<T>(p: Promise<T>): { done: () => boolean; p: Promise<T> } {
  let finished = false;
  void p.then(() => { finished = true; }, () => { finished = true; });
  return { done: () => finished, p };
}

export interface FioJob {
  /** fio's exit status once it has written and verified. */
  done: Promise<number | null>;
  finished: () => boolean;
  /** fio's lines about errors and verification, for a failure message. */
  out: () => string;
}

/** fio 4k random writes with crc32c verification over [0, size) of dev; extra fio options appended. */
export function fioVerify(dev: string, size: string, extra: string[] = []): FioJob {
  const p = spawn('fio', ['--name=verify', `--filename=${dev}`, '--rw=randwrite', '--bs=4k', `--size=${size}`, '--iodepth=8',
    '--ioengine=libaio', '--direct=1', '--verify=crc32c', '--do_verify=1', '--verify_fatal=1', '--randrepeat=0', ...extra],
  { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  p.stdout!.on('data', (d) => { out += d; });
  p.stderr!.on('data', (d) => { out += d; });
  let finished = false;
  const done = new Promise<number | null>((r) => p.once('exit', (code) => { finished = true; r(code); }));
  return { done, finished: () => finished, out: () => out.split('\n').filter((l) => /err|verify|bad/i.test(l)).join('\n') };
}
