// Answers map faults. The answer is computed from the store under the disk's lock: a thin (Zero) segment
// that is written gets a new segment, zeroed and fdatasync'ed inside the allocating transaction, so the mapping
// commits only once the segment reads as zeros; a write to a shared (No-write) segment gets a private copy
// (redirect-on-write) the same way. The answer goes out after the commit. Everything else is answered with
// the stored entry (an agent that restarted or lost its lease reloads this way).
import fs from 'node:fs';
import { VdiskError } from '../errors.js';
import { FAULT_DISCARD, FAULT_RECLAIM, FAULT_WRITE } from '../io/translator.js';
import * as abi from '../native/abi.js';
import { addon } from '../native/addon.js';
import { STATE_ERROR, STATE_INVALID, STATE_NO_WRITE, STATE_ZERO, type Entry } from '../table/mapping-table.js';
import type { FaultAnswer } from '../agent/agent-disk.js';
import type { Disk, Store } from './store.js';

/** How long an agent holds a write to a held segment before asking again. */
const HOLD_DELAY_MS = 50;
const ENOSPC = 28;
const EROFS = 30;

export class SegmentIo {
  private readonly fds = new Map<number, number>();

  constructor(private readonly store: Store) {}

  /** Copies one segment between containers, durably, before the remap that points at the copy commits. */
  async copy(from: Entry, to: Entry, length: number): Promise<void> {
    const src = await this.fd(from.container);
    const dst = await this.fd(to.container);
    const buf = Buffer.allocUnsafe(Math.min(length, 4 << 20));
    for (let done = 0; done < length;) {
      const n = Math.min(buf.length, length - done);
      const got = await new Promise<number>((resolve, reject) => fs.read(src, buf, 0, n, from.offset + done, (err, r) => (err ? reject(VdiskError.from(err, 'read container')) : resolve(r))));
      if (got < n) buf.fill(0, got, n); // past the end of a sparse file: zeros
      await new Promise<void>((resolve, reject) => fs.write(dst, buf, 0, n, to.offset + done, (err) => (err ? reject(VdiskError.from(err, 'write container')) : resolve())));
      done += n;
    }
    await new Promise<void>((resolve, reject) => fs.fdatasync(dst, (err) => (err ? reject(VdiskError.from(err, 'fdatasync container')) : resolve())));
  }

  /** Makes [offset, offset + length) of the container read as zeros, durably. */
  async zero(containerId: number, offset: number, length: number): Promise<void> {
    const fd = await this.fd(containerId);
    try {
      addon().fallocate(fd, abi.FALLOC_FL_ZERO_RANGE | abi.FALLOC_FL_KEEP_SIZE, offset, length);
    } catch {
      // tmpfs and some file systems lack ZERO_RANGE: a punched hole reads as zeros too.
      try {
        addon().fallocate(fd, abi.FALLOC_FL_PUNCH_HOLE | abi.FALLOC_FL_KEEP_SIZE, offset, length);
      } catch {
        await writeZeros(fd, offset, length);
      }
    }
    await new Promise<void>((resolve, reject) => fs.fdatasync(fd, (err) => (err ? reject(VdiskError.from(err, 'fdatasync container')) : resolve())));
  }

  private async fd(id: number): Promise<number> {
    let fd = this.fds.get(id);
    if (fd !== undefined) return fd;
    const c = await this.store.containerById(id);
    if (!c) throw new VdiskError(`container ${id} is gone`, { code: 'ENOENT' });
    try {
      fd = fs.openSync(c.path, 'r+');
    } catch (err) {
      throw VdiskError.from(err, `cannot open container ${c.name}`);
    }
    this.fds.set(id, fd);
    return fd;
  }

  close(): void {
    for (const fd of this.fds.values()) fs.closeSync(fd);
    this.fds.clear();
  }
}

async function writeZeros(fd: number, offset: number, length: number): Promise<void> {
  const buf = Buffer.alloc(Math.min(length, 1 << 20));
  for (let done = 0; done < length;) {
    const n = Math.min(buf.length, length - done);
    await new Promise<void>((resolve, reject) => fs.write(fd, buf, 0, n, offset + done, (err) => (err ? reject(err) : resolve())));
    done += n;
  }
}

/** The answer to one fault; the caller holds the disk's lock and sends the answer before releasing it. */
export async function answerFault(store: Store, io: SegmentIo, disk: Disk, op: number, segment: number, held: boolean): Promise<FaultAnswer> {
  if (!Number.isInteger(segment) || segment < 0 || segment >= disk.segments) {
    throw new VdiskError(`segment ${segment} is outside disk ${disk.name} (${disk.segments} segments)`, { code: 'ERANGE' });
  }
  let [entry] = await store.getEntries(disk, segment, 1);
  if (entry.states & STATE_ERROR) return { action: 'entry', entry }; // the agent installs E: the I/O fails with EIO
  if (entry.states & STATE_INVALID) return { action: 'error', errno: abi.EIO };
  const writing = op === FAULT_WRITE || op === FAULT_DISCARD || op === FAULT_RECLAIM;
  if (writing && disk.readOnly) return { action: 'error', errno: EROFS }; // the device refuses writes first; never allocate for one
  if (writing && held) return { action: 'delay', ms: HOLD_DELAY_MS }; // held No-write (operator, migration)
  if (op === FAULT_RECLAIM) {
    if (entry.states & STATE_ZERO) return { action: 'entry', entry };
    return { action: 'entry', entry: await store.reclaimSegment(disk, segment), allocated: true, reclaimed: true };
  }
  if (op === FAULT_WRITE && entry.states & STATE_ZERO) {
    try {
      entry = await store.allocateSegment(disk, segment, (e: Entry, length: number) => io.zero(e.container, e.offset, length));
    } catch (err) {
      if ((err as VdiskError).code === 'ENOSPC') return { action: 'error', errno: ENOSPC };
      throw err;
    }
    return { action: 'entry', entry, allocated: true };
  }
  if (writing && entry.states & STATE_NO_WRITE) {
    try {
      const r = await store.copyOnWrite(disk, segment, (from, to, length) => io.copy(from, to, length));
      return { action: 'entry', entry: r.entry, allocated: r.remapped };
    } catch (err) {
      if ((err as VdiskError).code === 'ENOSPC') return { action: 'error', errno: ENOSPC };
      throw err;
    }
  }
  return { action: 'entry', entry };
}
