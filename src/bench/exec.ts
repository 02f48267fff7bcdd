// The system tools the benchmarks drive (fio, losetup, dd, stat) and the byte-level checks they make on
// devices and files. A tool that fails throws a VdiskError with its stderr: a bench row is never made up.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { VdiskError } from '../errors.js';
import { LABEL_BYTES, LABEL_RESERVED_BYTES } from '../label/container-label.js';

export const MiB = 1 << 20;
export const GiB = 1024 * MiB;
/**
 * Where a thick disk's data starts in a container that `vdisk container add` labelled: nothing is allocated
 * in the label's reserve, so segment i is the file's MiB i + 1 (with 1 MiB segments).
 */
export const DATA_AT = LABEL_RESERVED_BYTES;

export function sh(cmd: string, args: string[], env?: NodeJS.ProcessEnv): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 64 << 20, env: env ?? process.env });
  if (r.error) throw VdiskError.from(r.error, `${cmd} could not run`);
  if (r.status !== 0) throw new VdiskError(`${cmd} ${args.join(' ')} exited ${r.status}: ${r.stderr.trim()}`, { code: 'EIO' });
  return r.stdout;
}

/** One side (read or write) of a fio job, as its JSON output has it. */
export interface FioSide {
  iops: number; bw_bytes: number; bw: number; runtime: number; total_ios: number;
  clat_ns: { mean: number; percentile?: Record<string, number> };
}
export interface FioJob { read: FioSide; write: FioSide }

export function fioJob(args: string[]): FioJob {
  const out = sh('fio', [...args, '--output-format=json']);
  const parsed = JSON.parse(out.slice(out.indexOf('{'))) as { jobs: FioJob[] };
  const job = parsed.jobs[0];
  if (!job) throw new VdiskError(`fio ${args.join(' ')} reported no job`, { code: 'EIO' });
  return job;
}

export interface RandResult { iops: number; clatP50us: number; clatP99us: number }
export type RandRw = 'randread' | 'randwrite';

/**
 * The workload: 4k random, QD 32, 1 job, libaio, direct, time based; over the whole device, or over
 * [offset, offset + size) bytes of it.
 */
export function fioRand(dev: string, rw: RandRw, runtime: number, range?: { offset: number; size: number }): RandResult {
  const job = fioJob([`--name=${rw}`, `--filename=${dev}`, `--rw=${rw}`, '--bs=4k', '--iodepth=32', '--numjobs=1',
    '--ioengine=libaio', '--direct=1', '--time_based', `--runtime=${runtime}`, '--ramp_time=3', '--norandommap', '--randrepeat=0',
    ...(range ? [`--offset=${range.offset}`, `--size=${range.size}`] : [])]);
  const side = rw === 'randread' ? job.read : job.write;
  const p = side.clat_ns.percentile ?? {};
  return { iops: side.iops, clatP50us: (p['50.000000'] ?? NaN) / 1000, clatP99us: (p['99.000000'] ?? NaN) / 1000 };
}

export interface SeqResult { mbPerSec: number; elapsedMs: number; ios: number }

/** Sequential writes of `bs` over [offset, offset + size) MiB, once, QD 16. */
export function fioSeqWrite(dev: string, label: string, bs: string, offsetMiB: number, sizeMiB: number): SeqResult {
  const w = fioJob([`--name=${label}`, `--filename=${dev}`, '--rw=write', `--bs=${bs}`, `--offset=${offsetMiB}M`, `--size=${sizeMiB}M`,
    '--iodepth=16', '--numjobs=1', '--ioengine=libaio', '--direct=1']).write;
  return { mbPerSec: Number((w.bw_bytes / MiB).toFixed(1)), elapsedMs: w.runtime, ios: w.total_ios };
}

export interface FirstWrites { iodepth: number; ios: number; elapsedMs: number; iops: number; clatMeanMs: number; clatP99Ms: number }

/**
 * One 4 KiB write at a random 4 KiB offset in each 1 MiB segment of [offset, offset + count MiB), the
 * segments in a random order (the same for every device, so vdisk and dm-thin see one workload): random
 * first writes, which no allocation ahead for sequential writers can serve. Replayed from a fio I/O log.
 */
export function fioOnePerSegment(dev: string, offsetMiB: number, count: number, qd: number): FirstWrites {
  let seed = 0x9e3779b9 ^ count;
  const rand = (n: number): number => {
    seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0;
    return seed % n;
  };
  const order = Array.from({ length: count }, (_, i) => i);
  for (let i = count - 1; i > 0; i--) {
    const k = rand(i + 1);
    [order[i], order[k]] = [order[k]!, order[i]!];
  }
  const log = [`fio version 2 iolog`, `${dev} add`, `${dev} open`,
    ...order.map((seg) => `${dev} write ${(offsetMiB + seg) * MiB + rand(256) * 4096} 4096`), `${dev} close`];
  const file = path.join(os.tmpdir(), `vdisk-bench-first-${process.pid}.iolog`);
  fs.writeFileSync(file, log.join('\n') + '\n');
  try {
    const w = fioJob(['--name=first', `--read_iolog=${file}`, `--iodepth=${qd}`, '--numjobs=1', '--ioengine=libaio', '--direct=1']).write;
    return {
      iodepth: qd, ios: w.total_ios, elapsedMs: w.runtime, iops: Math.round(w.total_ios / (w.runtime / 1000)),
      clatMeanMs: Number((w.clat_ns.mean / 1e6).toFixed(2)), clatP99Ms: Number(((w.clat_ns.percentile?.['99.000000'] ?? NaN) / 1e6).toFixed(2)),
    };
  } finally {
    fs.rmSync(file, { force: true });
  }
}

/** The file system type of the mount holding dir, from /proc/self/mounts (stat -f says "ext2/ext3" for ext4). */
export function fsType(dir: string): string {
  try {
    const real = fs.realpathSync(dir);
    let best = { at: '', type: 'unknown' };
    for (const line of fs.readFileSync('/proc/self/mounts', 'utf8').split('\n')) {
      const [, at, type] = line.split(' ');
      if (!at || !type) continue;
      const under = at === '/' || real === at || real.startsWith(`${at}/`);
      if (under && at.length >= best.at.length) best = { at, type };
    }
    return best.type;
  } catch {
    return 'unknown';
  }
}

/** Segments [first, first + n) of a device (1 MiB each), read with O_DIRECT, past the page cache. */
export function readDirect(dev: string, first: number, n: number): Buffer {
  const r = spawnSync('dd', [`if=${dev}`, 'iflag=direct', 'bs=1M', `skip=${first}`, `count=${n}`, 'status=none'], { maxBuffer: (n + 1) * MiB });
  if (r.status !== 0) throw new VdiskError(`dd from ${dev}: ${r.stderr.toString()}`, { code: 'EIO' });
  return r.stdout;
}

export function readFileMiB(file: string, first: number, n: number): Buffer {
  const buf = Buffer.alloc(n * MiB);
  const fd = fs.openSync(file, 'r');
  try {
    fs.readSync(fd, buf, 0, buf.length, first * MiB);
  } finally {
    fs.closeSync(fd);
  }
  return buf;
}

/**
 * Compares a few 4 KiB blocks read through a device of `size` bytes with the file `fileOffset` further on
 * (a thick disk on a labelled container: DATA_AT).
 */
export function sameData(dev: string, file: string, size: number, fileOffset: number): boolean {
  const offsets = [0, Math.floor(size / 2 / MiB) * MiB + 4096, size - 4096];
  const a = Buffer.alloc(4096);
  const b = Buffer.alloc(4096);
  const fa = fs.openSync(dev, 'r');
  const fb = fs.openSync(file, 'r');
  try {
    return offsets.every((off) => {
      fs.readSync(fa, a, 0, 4096, off);
      fs.readSync(fb, b, 0, 4096, fileOffset + off);
      return a.equals(b);
    });
  } finally {
    fs.closeSync(fa);
    fs.closeSync(fb);
  }
}

/** Bytes the file really occupies (st_blocks). */
export const physicalBytes = (file: string): number => fs.statSync(file).blocks * 512;

/**
 * Writes `bytes` of random data into a file from byte `at` (so that copies move real data, not holes); each
 * MiB starts with its index from `at`.
 */
export function fillRandom(file: string, at: number, bytes: number): void {
  const fd = fs.openSync(file, 'r+');
  try {
    const buf = Buffer.alloc(4 * MiB);
    for (let off = 0; off < bytes; off += buf.length) {
      for (let k = 0; k < buf.length; k += 65536) buf.fill(Math.floor(Math.random() * 256), k, k + 65536);
      for (let m = 0; m < buf.length; m += MiB) buf.writeUInt32LE((off + m) / MiB, m);
      fs.writeSync(fd, buf, 0, Math.min(buf.length, bytes - off), at + off);
    }
    fs.fdatasyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Wipes a vdisk label left at the start of a file (the controller that wrote it is gone with its data
 * directory, so no `container rm` will), so that a next run can add the file again. True when there was one.
 */
export function wipeLeftLabel(file: string): boolean {
  const fd = fs.openSync(file, 'r+');
  try {
    const head = Buffer.alloc(8);
    fs.readSync(fd, head, 0, head.length, 0);
    if (head.toString('latin1') !== 'VDISKLBL') return false;
    fs.writeSync(fd, Buffer.alloc(LABEL_BYTES), 0, LABEL_BYTES, 0);
    fs.fdatasyncSync(fd);
    return true;
  } finally {
    fs.closeSync(fd);
  }
}
