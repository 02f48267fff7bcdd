// Turns one ublk request into backing operations through a mapping table, writing plan records for the
// native queue. Runs on a queue worker for every request, so it allocates nothing: results go into the plan
// Int32Array and, for a fault, into the fault* fields. Adjacent pieces that stay contiguous in one container
// merge into one operation, so a loop disk costs one backing I/O per request whatever its segment size.
import * as abi from '../native/abi.js';
import { FAULT_DISCARD, FAULT_READ, FAULT_RECLAIM, FAULT_WRITE } from '../protocol/fault-ops.js';
import { ALT_BLOCK_SHIFT, type AltTable } from '../table/alternates.js';
import {
  MappingTable, STATE_ALTERNATE, STATE_ERROR, STATE_INVALID, STATE_NO_WRITE, STATE_ZERO,
} from '../table/mapping-table.js';


/**
 * Outcome of translate(): the request is planned, it needs the controller (a map fault), or it is a FLUSH
 * that does not fit this batch's flush reserve (the worker plans it first in the next batch).
 */
export const PLANNED = 0;
export const FAULTED = 1;
export const DEFERRED = 2;
/**
 * A FLUSH or a FUA write while the controller may not have made the mappings it relies on durable (see the
 * sync words): it waits for a disk.sync that covers generation `syncNeed`, then is planned again.
 */
export const SYNC = 3;

/**
 * Words of a disk's sync block. The controller commits fault mappings without an fsync of their own and
 * makes them durable when asked (dm-thin's rule: before the next FLUSH or FUA completes). The agent's main
 * thread bumps SYNC_MAPPED before it installs anything the controller sent, and stores into SYNC_DURABLE the
 * SYNC_MAPPED it read before a disk.sync that then succeeded. Both wrap as Int32 (see genReached).
 */
export const SYNC_MAPPED = 0;
export const SYNC_DURABLE = 1;
export const SYNC_WORDS = 2;

/** Whether generation `seen` is at or past `target`: a wrapping difference, as for barrier epochs. */
export function genReached(seen: number, target: number): boolean {
  return ((seen - target) | 0) >= 0;
}

/** Words of a dirty-container bitmap for container ids below `containers`. */
export const dirtyWords = (containers: number): number => Math.ceil(containers / 32);

/** Marks container `id` in a dirty-container bitmap (ids past its end are ignored); one atomic OR at most. */
export function markDirty(dirty: Int32Array, id: number): void {
  const w = id >>> 5;
  const bit = 1 << (id & 31);
  if (w < dirty.length && (Atomics.load(dirty, w) & bit) === 0) Atomics.or(dirty, w, bit);
}

/**
 * How far past a sequential writer an ahead hint looks for the end of what is mapped (see aheadHint): the
 * controller's largest window by default, in bytes, and at least AHEAD_SCAN_MIN segments.
 */
export const AHEAD_SCAN_BYTES = 64 << 20;
export const AHEAD_SCAN_MIN = 64;

export class Translator {
  readonly plan: Int32Array;
  /** Records written so far in the current batch. */
  n = 0;
  // Set when translate() returns FAULTED.
  faultOp = 0;
  faultSegment = 0;
  faultStates = 0;
  /** The faulting piece within its segment: lets the controller copy only what a write touches. */
  faultOffset = 0;
  faultLength = 0;

  /** Fault whole-segment discards of mapped segments as FAULT_RECLAIM (a controller is there to answer). */
  reclaimWholeSegments = false;

  /** Set when translate() returns SYNC: the SYNC_MAPPED generation a disk.sync must cover. */
  syncNeed = 0;
  /**
   * The sync words of a disk whose controller commits lazily (undefined: every mapping is durable already, as
   * for a loop disk). Set syncPassed for one translate() of a request whose sync is done.
   */
  syncWords: Int32Array | undefined;
  syncPassed = false;

  /** Set when aheadHint() returns a segment: the segment the writer entered. */
  aheadFrom = 0;
  // aheadHint's memory: where this queue's last write ended; segments (scanBase, scanUpTo) were mapped when
  // last looked at; the last hint sent.
  private lastWriteEnd = -1;
  private readonly aheadScan: number;
  private scanBase = -1;
  private scanUpTo = -1;
  private lastHint = -1;

  private readonly capacity: number;
  private readonly alt: AltTable | undefined;
  /** Records past the per-tag budget that FLUSHes of this batch may still use (see reset()). */
  private reserveLeft: number;
  private readonly flushScratch: Int32Array;

  /**
   * @param table the disk's mapping table
   * @param containerFds container id -> open fd (-1 when not open); shared so containers can be added live
   * @param dirty bitmap of the containers this device has written without RWF_DSYNC (or fallocated), shared
   *   by every queue of the device: a FLUSH on any queue fdatasyncs exactly those. A bit is set before the
   *   write is planned, so a FLUSH, which the kernel sends after the writes it covers completed, sees it.
   *   Bits are never cleared: a FLUSH that cleared one could let a concurrent FLUSH skip an fdatasync still
   *   in flight.
   * @param sectors the disk's size in 512-byte sectors
   * @param planRecords the plan buffer's records: depth x MAX_OPS_PER_TAG, plus flushReserve
   * @param flushReserve records beyond the per-tag budget for a FLUSH reaching many containers
   */
  constructor(
    readonly table: MappingTable,
    readonly containerFds: Int32Array,
    readonly dirty: Int32Array,
    readonly sectors: number,
    planRecords: number,
    private readonly flushReserve = 0,
  ) {
    this.plan = new Int32Array(planRecords * abi.PLAN_STRIDE);
    this.capacity = planRecords;
    this.alt = table.alternates;
    this.aheadScan = Math.max(AHEAD_SCAN_MIN, Math.floor(AHEAD_SCAN_BYTES / table.segmentSize));
    this.reserveLeft = flushReserve;
    this.flushScratch = new Int32Array(dirty.length * 32);
  }

  /** Starts a new batch: the plan is empty and the flush reserve full again. */
  reset(): void {
    this.n = 0;
    this.reserveLeft = this.flushReserve;
  }

  /**
   * Plans request `tag`. Returns PLANNED (records appended, ending with a COMMIT), FAULTED (nothing
   * appended; faultOp/faultSegment/faultStates say why), DEFERRED (a FLUSH) or SYNC (nothing appended).
   */
  translate(tag: number, opFlags: number, nrSectors: number, sector: number): number {
    const op = opFlags & 0xff;
    const start = this.n;
    const fua = op === abi.UBLK_IO_OP_WRITE && (opFlags & abi.UBLK_IO_F_FUA) !== 0;
    if ((op === abi.UBLK_IO_OP_FLUSH || fua) && this.syncWords && !this.syncPassed) {
      // A FUA write that then faults syncs again after its answer (the answer bumped SYNC_MAPPED).
      const mapped = Atomics.load(this.syncWords, SYNC_MAPPED);
      if (!genReached(Atomics.load(this.syncWords, SYNC_DURABLE), mapped)) {
        this.syncNeed = mapped;
        return SYNC;
      }
    }
    if (op === abi.UBLK_IO_OP_FLUSH) return this.flush(tag, start);
    if (sector + nrSectors > this.sectors || nrSectors === 0) return this.commit(tag, start, -abi.EIO);
    switch (op) {
      case abi.UBLK_IO_OP_READ:
        return this.mapRange(tag, start, FAULT_READ, sector, nrSectors, 0);
      case abi.UBLK_IO_OP_WRITE:
        return this.mapRange(tag, start, FAULT_WRITE, sector, nrSectors, opFlags & abi.UBLK_IO_F_FUA ? abi.RWF_DSYNC : 0);
      case abi.UBLK_IO_OP_DISCARD:
        return this.mapRange(tag, start, FAULT_DISCARD, sector, nrSectors, abi.FALLOC_FL_PUNCH_HOLE | abi.FALLOC_FL_KEEP_SIZE);
      case abi.UBLK_IO_OP_WRITE_ZEROES:
        return this.mapRange(tag, start, FAULT_DISCARD, sector, nrSectors,
          opFlags & abi.UBLK_IO_F_NOUNMAP ? abi.FALLOC_FL_ZERO_RANGE | abi.FALLOC_FL_KEEP_SIZE
            : abi.FALLOC_FL_PUNCH_HOLE | abi.FALLOC_FL_KEEP_SIZE);
      default:
        return this.commit(tag, start, -abi.EOPNOTSUPP);
    }
  }

  /**
   * One FDATASYNC per container the device has dirtied and still has open. Up to the per-tag budget like any
   * request; past it, from the batch's flush reserve, and DEFERRED when another FLUSH of this batch used it.
   */
  private flush(tag: number, start: number): number {
    const d = this.dirty;
    const fds = this.flushScratch;
    let k = 0;
    for (let w = 0; w < d.length; w++) {
      for (let bits = Atomics.load(d, w); bits !== 0; bits &= bits - 1) {
        const fd = this.containerFds[w * 32 + 31 - Math.clz32(bits & -bits)];
        if (fd !== undefined && fd >= 0) fds[k++] = fd;
      }
    }
    const extra = k + 1 - abi.MAX_OPS_PER_TAG;
    if (extra > 0) {
      if (extra > this.reserveLeft) {
        if (extra > this.flushReserve) return this.commit(tag, start, -abi.EIO); // could never fit: see Device
        return DEFERRED;
      }
      this.reserveLeft -= extra;
    }
    for (let i = 0; i < k; i++) this.push(abi.OP_FDATASYNC, tag, fds[i], 0, 0, 0, 0);
    return this.commit(tag, start, 0);
  }

  private markDirty(container: number): void {
    markDirty(this.dirty, container);
  }

  /**
   * After a planned write: the first Zero segment within aheadScan segments past it, when the write looks
   * like a sequential writer's entering a segment: it starts at the segment's first byte, the previous write
   * this queue planned ended inside the segment before, and the segments before and after are mapped (it
   * writes inside a window the controller mapped ahead). -1 otherwise, or when that segment was the last
   * hint. The controller maps the writer's next window from there without the writer waiting on it. Only a
   * hint: the controller decides, and a stale look (a table changed since) costs one refused message.
   * Random writers rarely pass the first two tests, so they seldom pay for the scan; a sequential writer
   * pays for each segment once (segments found mapped are remembered).
   */
  aheadHint(sector: number, nrSectors: number): number {
    const t = this.table;
    const segSize = t.segmentSize;
    const pos = sector * 512;
    const end = pos + nrSectors * 512;
    const prevEnd = this.lastWriteEnd;
    this.lastWriteEnd = end;
    const s = pos / segSize;
    if (s !== Math.floor(s) || s === 0 || prevEnd <= pos - segSize || prevEnd > pos) return -1;
    const unusable = STATE_INVALID | STATE_ZERO | STATE_ERROR;
    if (t.load(s - 1) & unusable) return -1;
    const last = Math.floor((end - 1) / segSize);
    const limit = Math.min(t.segments, last + 1 + this.aheadScan);
    let k = this.scanBase <= last && last < this.scanUpTo ? this.scanUpTo : last + 1;
    let found = -1;
    for (; k < limit; k++) {
      const states = t.load(k);
      if ((states & unusable) === 0) continue;
      if ((states & (STATE_INVALID | STATE_ERROR)) === 0) found = k;
      break;
    }
    this.scanBase = last;
    this.scanUpTo = k;
    if (found <= last + 1 || found === this.lastHint) return -1;
    this.lastHint = found;
    this.aheadFrom = s;
    return found;
  }

  /** Appends a COMMIT for `tag` with a result (negative errno fails it); drops the tag's earlier records. */
  fail(tag: number, errno: number): void {
    this.commit(tag, this.n, -Math.abs(errno));
  }

  /** Appends a COMMIT for `tag` with `bytes` done: a request served outside the plan (a copy-on-write claim wrote it). */
  succeed(tag: number, bytes: number): void {
    this.commit(tag, this.n, bytes);
  }

  private mapRange(tag: number, start: number, kind: number, sector: number, nrSectors: number, flags: number): number {
    const t = this.table;
    const segSize = t.segmentSize;
    let pos = sector * 512;
    const end = pos + nrSectors * 512;
    let bufOff = 0;
    while (pos < end) {
      const seg = Math.floor(pos / segSize);
      const inSeg = pos - seg * segSize;
      const len = Math.min(end - pos, segSize - inSeg);
      const states = t.load(seg);
      if (states & STATE_ERROR) return this.commit(tag, start, -abi.EIO);
      // Zero segments read as zeros and need nothing for discard; everything else not plainly mapped faults.
      // Alternate entries serve reads block by block and writes whose blocks all live at the alternate.
      const reclaim = kind === FAULT_DISCARD && this.reclaimWholeSegments && len === segSize && (states & (STATE_ZERO | STATE_INVALID)) === 0;
      let blocked = reclaim ? 1 : kind === FAULT_READ
        ? states & STATE_INVALID
        : states & (STATE_INVALID | STATE_NO_WRITE | (kind === FAULT_WRITE ? STATE_ZERO : STATE_ALTERNATE));
      if (!blocked && states & STATE_ALTERNATE) {
        blocked = this.alt === undefined || !this.mapAlternate(tag, start, kind, t.container, t.offset, t.alt, inSeg, len, bufOff, flags) ? 1 : 0;
      } else if (!blocked) {
        if (states & STATE_ZERO) {
          // Counted and merged like any record (its "offset" is the buffer's, so adjacent pieces merge).
          if (kind === FAULT_READ && !this.piece(abi.OP_ZERO, tag, start, 0, 0, bufOff, bufOff, len)) return this.commit(tag, start, -abi.EIO);
        } else {
          const fd = this.containerFds[t.container];
          if (fd === undefined || fd < 0) return this.commit(tag, start, -abi.EIO);
          const bop = kind === FAULT_READ ? abi.OP_READ : kind === FAULT_WRITE ? abi.OP_WRITE : abi.OP_FALLOCATE;
          // (A discard's flags are fallocate modes, not RWF_*: it always dirties its container.)
          if (bop === abi.OP_FALLOCATE || (bop === abi.OP_WRITE && (flags & abi.RWF_DSYNC) === 0)) this.markDirty(t.container);
          if (!this.piece(bop, tag, start, fd, flags, kind === FAULT_DISCARD ? 0 : bufOff, t.offset + inSeg, len)) return this.commit(tag, start, -abi.EIO);
        }
      }
      if (blocked) {
        this.n = start;
        this.faultOp = reclaim ? FAULT_RECLAIM : kind;
        this.faultSegment = seg;
        this.faultStates = states;
        this.faultOffset = inSeg;
        this.faultLength = len;
        return FAULTED;
      }
      pos += len;
      if (kind !== FAULT_DISCARD) bufOff += len;
    }
    return this.commit(tag, start, kind === FAULT_DISCARD ? 0 : nrSectors * 512);
  }

  /**
   * One piece of an Alternate entry: reads take each block from where it lives, writes go to the alternate
   * when every block they touch is there. Returns false to fault (blocks not yet there, a closed container,
   * or a read too fragmented for the request's records: the controller then folds the segment).
   */
  private mapAlternate(tag: number, start: number, kind: number, container: number, offset: number, slot: number,
    inSeg: number, len: number, bufOff: number, flags: number): boolean {
    const alt = this.alt!;
    const altFd = this.containerFds[alt.container(slot)];
    const altOff = alt.offset(slot);
    if (altFd === undefined || altFd < 0) return false;
    if (kind === FAULT_WRITE) {
      if ((flags & abi.RWF_DSYNC) === 0) this.markDirty(alt.container(slot));
      return alt.covers(slot, inSeg, len) && this.piece(abi.OP_WRITE, tag, start, altFd, flags, bufOff, altOff + inSeg, len);
    }
    const fd = this.containerFds[container];
    if (fd === undefined || fd < 0) return false;
    for (let p = inSeg, end = inSeg + len; p < end;) {
      const b = p >>> ALT_BLOCK_SHIFT;
      const there = alt.has(slot, b);
      let q = Math.min(end, (b + 1) << ALT_BLOCK_SHIFT);
      while (q < end && alt.has(slot, q >>> ALT_BLOCK_SHIFT) === there) q = Math.min(end, q + (1 << ALT_BLOCK_SHIFT));
      if (!this.piece(abi.OP_READ, tag, start, there ? altFd : fd, 0, bufOff + p - inSeg, (there ? altOff : offset) + p, q - p)) return false;
      p = q;
    }
    return true;
  }

  /** Appends (or merges) one backing operation; false when the request would need too many records. */
  private piece(op: number, tag: number, start: number, fd: number, flags: number, bufOff: number, off: number, len: number): boolean {
    if (this.extend(op, tag, fd, flags, bufOff, off, len)) return true;
    if (this.n - start >= abi.MAX_OPS_PER_TAG - 1) return false;
    this.push(op, tag, fd, flags, bufOff, len, off);
    return true;
  }

  /** Grows the previous record when this piece continues it in the same file and buffer. */
  private extend(op: number, tag: number, fd: number, flags: number, bufOff: number, off: number, len: number): boolean {
    if (this.n === 0) return false;
    const p = this.plan;
    const r = (this.n - 1) * abi.PLAN_STRIDE;
    if (p[r + abi.PLAN_OP] !== op || p[r + abi.PLAN_TAG] !== tag || p[r + abi.PLAN_FD] !== fd || p[r + abi.PLAN_FLAGS] !== flags) return false;
    const prevLen = p[r + abi.PLAN_LEN];
    const prevOff = (p[r + abi.PLAN_OFF_LO] >>> 0) + (p[r + abi.PLAN_OFF_HI] >>> 0) * 0x100000000;
    if (prevOff + prevLen !== off) return false;
    if (op !== abi.OP_FALLOCATE && p[r + abi.PLAN_BUF_OFF] + prevLen !== bufOff) return false;
    if (prevLen + len > 0x7fffffff) return false;
    p[r + abi.PLAN_LEN] = prevLen + len;
    return true;
  }

  private push(op: number, tag: number, fd: number, flags: number, bufOff: number, len: number, off: number): void {
    if (this.n >= this.capacity) throw new RangeError('plan buffer full');
    const p = this.plan;
    const r = this.n * abi.PLAN_STRIDE;
    p[r + abi.PLAN_OP] = op;
    p[r + abi.PLAN_TAG] = tag;
    p[r + abi.PLAN_FD] = fd;
    p[r + abi.PLAN_FLAGS] = flags;
    p[r + abi.PLAN_BUF_OFF] = bufOff;
    p[r + abi.PLAN_LEN] = len;
    p[r + abi.PLAN_OFF_LO] = off % 0x100000000;
    p[r + abi.PLAN_OFF_HI] = Math.floor(off / 0x100000000);
    this.n++;
  }

  private commit(tag: number, start: number, result: number): number {
    if (result < 0) this.n = start;
    this.push(abi.OP_COMMIT, tag, result, 0, 0, 0, 0);
    return PLANNED;
  }
}
