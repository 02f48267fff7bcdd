// Turns one ublk request into backing operations through a mapping table, writing plan records for the
// native queue. Runs on a queue worker for every request, so it allocates nothing: results go into the plan
// Int32Array and, for a fault, into the fault* fields. Adjacent pieces that stay contiguous in one container
// merge into one operation, so a loop disk costs one backing I/O per request whatever its segment size.
import * as abi from '../native/abi.js';
import {
  MappingTable, STATE_ALTERNATE, STATE_ERROR, STATE_INVALID, STATE_NO_WRITE, STATE_ZERO,
} from '../table/mapping-table.js';


/** Outcome of translate(): the request is planned, or it needs the controller (a map fault). */
export const PLANNED = 0;
export const FAULTED = 1;

export const FAULT_READ = 0;
export const FAULT_WRITE = 1;
export const FAULT_DISCARD = 2;
/** A discard or write-zeroes covering a whole mapped segment: the controller may turn it to Zero and free it. */
export const FAULT_RECLAIM = 3;

export class Translator {
  readonly plan: Int32Array;
  /** Records written so far in the current batch. */
  n = 0;
  // Set when translate() returns FAULTED.
  faultOp = 0;
  faultSegment = 0;
  faultStates = 0;

  /** Fault whole-segment discards of mapped segments as FAULT_RECLAIM (a controller is there to answer). */
  reclaimWholeSegments = false;

  private readonly capacity: number;

  /**
   * @param table the disk's mapping table
   * @param containerFds container id -> open fd (-1 when not open); shared so containers can be added live
   * @param flushFds the fds a FLUSH must fdatasync (every container the disk maps to)
   * @param sectors the disk's size in 512-byte sectors
   */
  constructor(
    readonly table: MappingTable,
    readonly containerFds: Int32Array,
    public flushFds: Int32Array,
    readonly sectors: number,
    planRecords: number,
  ) {
    this.plan = new Int32Array(planRecords * abi.PLAN_STRIDE);
    this.capacity = planRecords;
  }

  /**
   * Plans request `tag`. Returns PLANNED (records appended, ending with a COMMIT) or FAULTED (nothing
   * appended; faultOp/faultSegment/faultStates say why).
   */
  translate(tag: number, opFlags: number, nrSectors: number, sector: number): number {
    const op = opFlags & 0xff;
    const start = this.n;
    if (op === abi.UBLK_IO_OP_FLUSH) {
      for (let k = 0; k < this.flushFds.length; k++) this.push(abi.OP_FDATASYNC, tag, this.flushFds[k], 0, 0, 0, 0);
      return this.commit(tag, start, 0);
    }
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

  /** Appends a COMMIT for `tag` with a result (negative errno fails it); drops the tag's earlier records. */
  fail(tag: number, errno: number): void {
    this.commit(tag, this.n, -Math.abs(errno));
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
      const reclaim = kind === FAULT_DISCARD && this.reclaimWholeSegments && len === segSize && (states & (STATE_ZERO | STATE_INVALID)) === 0;
      const blocked = reclaim ? 1 : kind === FAULT_READ
        ? states & (STATE_INVALID | STATE_ALTERNATE)
        : states & (STATE_INVALID | STATE_NO_WRITE | STATE_ALTERNATE | (kind === FAULT_WRITE ? STATE_ZERO : 0));
      if (blocked) {
        this.n = start;
        this.faultOp = reclaim ? FAULT_RECLAIM : kind;
        this.faultSegment = seg;
        this.faultStates = states;
        return FAULTED;
      }
      if (states & STATE_ZERO) {
        if (kind === FAULT_READ) this.push(abi.OP_ZERO, tag, 0, 0, bufOff, len, 0);
      } else {
        const fd = this.containerFds[t.container];
        if (fd === undefined || fd < 0) return this.commit(tag, start, -abi.EIO);
        const off = t.offset + inSeg;
        const bop = kind === FAULT_READ ? abi.OP_READ : kind === FAULT_WRITE ? abi.OP_WRITE : abi.OP_FALLOCATE;
        if (!this.extend(bop, tag, fd, flags, bufOff, off, len)) {
          if (this.n - start >= abi.MAX_OPS_PER_TAG - 1) return this.commit(tag, start, -abi.EIO);
          this.push(bop, tag, fd, flags, kind === FAULT_DISCARD ? 0 : bufOff, len, off);
        }
      }
      pos += len;
      if (kind !== FAULT_DISCARD) bufOff += len;
    }
    return this.commit(tag, start, kind === FAULT_DISCARD ? 0 : nrSectors * 512);
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
