// One disk's granted segments where its queue workers can claim them without the agent's main thread (DESIGN.md,
// "First writes without a round trip"): a ring of (container, offset) and the claims file's fd, in one
// SharedArrayBuffer under one lock word. The main thread fills and empties the ring and owns the file; a worker
// that finds a first write on an exact Zero entry appends the claim record and installs the entry, all under
// the lock, so the main thread's revocations, file rewrites and faults never interleave with a claim. A
// whole-segment write into a shared (No-write) entry claims too, when the controller allows it: its data is
// written to the granted segment before the record and the entry (copy-on-write without a round trip).
import fs from 'node:fs';
import { markDirty, SYNC_MAPPED } from './translator.js';
import { STATE_NO_WRITE, STATE_ZERO, type MappingTable } from '../table/mapping-table.js';
import type { Claim } from '../protocol/agent-ops.js';
import { failpoint } from '../util/failpoints.js';

/** A claim record: magic, segment, container, then the byte offset (a float64: offsets pass 2^32). */
export const CLAIM_RECORD_BYTES = 24;
/** A first write at a Zero entry. */
export const CLAIM_MAGIC = 0x4d494c43;
/** A whole-segment write at a shared No-write entry, its data already at the granted segment. */
export const CLAIM_MAGIC_COW = 0x574f4343;

export function encodeClaim(b: Uint8Array, at: number, segment: number, container: number, offset: number, cow = false): void {
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  v.setUint32(at, cow ? CLAIM_MAGIC_COW : CLAIM_MAGIC, true);
  v.setUint32(at + 4, segment, true);
  v.setUint32(at + 8, container, true);
  v.setUint32(at + 12, 0, true);
  v.setFloat64(at + 16, offset, true);
}

/** The record at `at`, or undefined where none is (a bad magic: the end of what was written). */
export function decodeClaim(b: Buffer, at: number): Claim | undefined {
  const magic = b.readUInt32LE(at);
  if (magic !== CLAIM_MAGIC && magic !== CLAIM_MAGIC_COW) return undefined;
  const c: Claim = { segment: b.readUInt32LE(at + 4), container: b.readUInt32LE(at + 8), offset: b.readDoubleLE(at + 16) };
  if (magic === CLAIM_MAGIC_COW) c.cow = true;
  return c;
}

const H_LOCK = 0;
const H_HEAD = 1; // next slot to take (counts up; slot = head % capacity)
const H_TAIL = 2; // next slot to fill
/** The claims file's fd + 1; 0: no file (nothing is claimed from the ring). */
const H_FD = 3;
/** Records in the claims file: the main thread reads the ones past what it has seen. */
const H_RECORDS = 4;
/**
 * Faults of this disk on their way to the controller (main thread) that found no FAULT_SLOTS slot: while any
 * is, no worker claims at all. Faults in slots stop claims of their own segment only (see faultOut()).
 */
const H_FAULTS = 5;
/** Set by a worker whose append failed: the main thread stops granting to the ring. */
const H_BROKEN = 6;
/**
 * Which copy-on-write claims the grants held may serve (0, COW_WHOLE, COW_COPY): the controller said so with
 * them (a redirect-on-write disk, no operator holds, no copy-out sharer in its family). Cleared with the ring.
 */
const H_COW = 7;
/** Whole-segment writes only. */
export const COW_WHOLE = 1;
/** Any write within one segment: the rest of the segment is copied first (`--partial copy`). */
export const COW_COPY = 2;
const HEADER_WORDS = 8;
/**
 * The segments with faults out, as (segment + 1, count) pairs. A worker does not claim a segment listed here:
 * the answer to a fault sent before the claim would be installed over the claimed entry, and the controller,
 * not knowing the claim yet, would have mapped the segment anew (the claimed data lost). An answer installs
 * its own segment's entry only (the controller pushes no windows ahead to a disk with grants, and every other
 * change to the table revokes the grants first), so faults of other segments do not stop a claim.
 */
const FAULT_SLOTS = 32;
const SLOTS_AT = HEADER_WORDS + 2 * FAULT_SLOTS; // Int32 words before the grants (a multiple of 2: Float64-aligned)

export class ClaimRing {
  private readonly h: Int32Array;
  private readonly slots: Float64Array;
  readonly capacity: number;
  private readonly record = new Uint8Array(CLAIM_RECORD_BYTES);

  constructor(readonly buffer: SharedArrayBuffer) {
    this.h = new Int32Array(buffer, 0, SLOTS_AT);
    this.capacity = (buffer.byteLength - SLOTS_AT * 4) / 16;
    this.slots = new Float64Array(buffer, SLOTS_AT * 4, this.capacity * 2);
  }

  static create(capacity: number): ClaimRing {
    return new ClaimRing(new SharedArrayBuffer(SLOTS_AT * 4 + Math.max(1, capacity) * 16));
  }

  /** Held briefly by either side (a claim is one write(2)): a spin, then short waits. */
  lock(): void {
    for (let spins = 0; Atomics.compareExchange(this.h, H_LOCK, 0, 1) !== 0; spins++) {
      if (spins > 100) Atomics.wait(this.h, H_LOCK, 1, 1);
    }
  }

  unlock(): void {
    Atomics.store(this.h, H_LOCK, 0);
    Atomics.notify(this.h, H_LOCK, 1);
  }

  /** Runs fn under the lock. */
  locked<T>(fn: () => T): T {
    this.lock();
    try {
      return fn();
    } finally {
      this.unlock();
    }
  }

  get size(): number {
    return Atomics.load(this.h, H_TAIL) - Atomics.load(this.h, H_HEAD);
  }

  // ---- main thread, under the lock

  push(container: number, offset: number): boolean {
    const tail = this.h[H_TAIL];
    if (tail - this.h[H_HEAD] >= this.capacity) return false;
    const s = (tail % this.capacity) * 2;
    this.slots[s] = container;
    this.slots[s + 1] = offset;
    Atomics.store(this.h, H_TAIL, tail + 1);
    return true;
  }

  /** The oldest granted segment, taken; undefined when empty. */
  pop(): { container: number; offset: number } | undefined {
    if (this.h[H_HEAD] === this.h[H_TAIL]) return undefined;
    const s = this.headSlot();
    Atomics.store(this.h, H_HEAD, this.h[H_HEAD] + 1);
    return { container: this.slots[s], offset: this.slots[s + 1] };
  }

  /** Under the lock, the ring not empty: where the oldest grant's (container, offset) sit in `slots`. */
  private headSlot(): number {
    return (this.h[H_HEAD] % this.capacity) * 2;
  }

  /**
   * Appends one claim record to the claims file `fd` (write(2): the page cache keeps it across a kill -9 of the
   * agent). Throws when it could not be written whole. The caller holds the lock.
   */
  writeRecord(fd: number, segment: number, container: number, offset: number, cow = false): void {
    encodeClaim(this.record, 0, segment, container, offset, cow);
    if (fs.writeSync(fd, this.record, 0, CLAIM_RECORD_BYTES) !== CLAIM_RECORD_BYTES) throw new Error('short write');
  }

  /**
   * A worker's claim, under the lock: the claims file's fd, or -1 when nothing may be claimed for `segment`
   * now (no file, no grant, a failed append, a fault of it out).
   */
  private claimable(segment: number): number {
    const fd = this.fd;
    return fd < 0 || this.h[H_HEAD] === this.h[H_TAIL] || this.h[H_BROKEN] !== 0 || this.faultsStop(segment) ? -1 : fd;
  }

  /** A worker's claim record; false (the main thread takes the grants back) when it could not be appended. */
  private recorded(fd: number, segment: number, container: number, offset: number, cow: boolean): boolean {
    try {
      this.writeRecord(fd, segment, container, offset, cow);
    } catch {
      // Without its record a claim could be lost with the agent: the main thread takes the grants back.
      this.h[H_BROKEN] = 1;
      return false;
    }
    Atomics.add(this.h, H_RECORDS, 1);
    return true;
  }

  clear(): void {
    Atomics.store(this.h, H_HEAD, Atomics.load(this.h, H_TAIL));
    Atomics.store(this.h, H_COW, 0);
  }

  get cow(): number {
    return Atomics.load(this.h, H_COW);
  }

  set cow(mode: number) {
    Atomics.store(this.h, H_COW, mode);
  }

  get fd(): number {
    return Atomics.load(this.h, H_FD) - 1;
  }

  set fd(fd: number) {
    Atomics.store(this.h, H_FD, fd + 1);
  }

  get records(): number {
    return Atomics.load(this.h, H_RECORDS);
  }

  set records(n: number) {
    Atomics.store(this.h, H_RECORDS, n);
  }

  get broken(): boolean {
    return Atomics.load(this.h, H_BROKEN) !== 0;
  }

  set broken(b: boolean) {
    Atomics.store(this.h, H_BROKEN, b ? 1 : 0);
  }

  /**
   * A fault of `segment` is on its way: no worker claims that segment until out() is called with the token
   * returned (the fault answered and installed). With every slot taken, no claim at all until then.
   */
  faultOut(segment: number): number {
    return this.locked(() => {
      let free = -1;
      for (let k = 0; k < FAULT_SLOTS; k++) {
        const w = HEADER_WORDS + 2 * k;
        if (this.h[w] === segment + 1) {
          this.h[w + 1]++;
          return k;
        }
        if (free < 0 && this.h[w] === 0) free = k;
      }
      if (free < 0) {
        this.h[H_FAULTS]++;
        return -1;
      }
      this.h[HEADER_WORDS + 2 * free] = segment + 1;
      this.h[HEADER_WORDS + 2 * free + 1] = 1;
      return free;
    });
  }

  /** The fault of faultOut()'s token was answered and its answer installed. */
  faultIn(token: number): void {
    this.locked(() => {
      if (token < 0) {
        this.h[H_FAULTS]--;
        return;
      }
      const w = HEADER_WORDS + 2 * token;
      if (--this.h[w + 1] === 0) this.h[w] = 0;
    });
  }

  /** Under the lock: whether a fault out stops a claim of `segment`. */
  private faultsStop(segment: number): boolean {
    if (this.h[H_FAULTS] !== 0) return true;
    for (let k = 0; k < FAULT_SLOTS; k++) if (this.h[HEADER_WORDS + 2 * k] === segment + 1) return true;
    return false;
  }

  // ---- a queue worker

  /**
   * A first write at `segment`, whose entry the worker found exactly Zero: takes the oldest granted segment,
   * appends its claim record to the claims file (the page cache keeps it across a kill -9 of the agent),
   * then installs the entry, after bumping SYNC_MAPPED (a FLUSH waits for the disk.sync that carries the
   * claim) and marking the container dirty. False (the write faults as before) when nothing can be claimed.
   */
  claim(segment: number, table: MappingTable, sync: Int32Array, dirty: Int32Array): boolean {
    if (this.size === 0 || Atomics.load(this.h, H_FD) === 0) return false;
    this.lock();
    try {
      const fd = this.claimable(segment);
      // Read again under the lock: the main thread changes entries only after it took the grants back.
      if (fd < 0 || table.load(segment) !== STATE_ZERO) return false;
      const s = this.headSlot();
      const container = this.slots[s];
      const offset = this.slots[s + 1];
      if (!this.recorded(fd, segment, container, offset, false)) return false;
      Atomics.store(this.h, H_HEAD, this.h[H_HEAD] + 1);
      Atomics.add(sync, SYNC_MAPPED, 1);
      markDirty(dirty, container);
      table.setRange(segment, 1, { states: 0, container, offset, alt: 0 });
      if (this.h[H_RECORDS] > 1) failpoint('agent.claimed');
      return true;
    } finally {
      this.unlock();
    }
  }

  /**
   * A write within one segment at `segment` (`whole`: all of it), whose entry the worker found exactly No-write
   * (shared, nothing else): when the grants allow that copy-on-write, takes the oldest granted segment, has
   * `write` put the whole segment's new data there (synchronously: the rest of the old segment copied, unless
   * `whole`, then the request's data), appends the COW claim record, then installs the entry at the new
   * segment, all under the lock. Until the entry is installed, readers read the old segment and every other
   * writer of it waits for the lock (a fault counts itself under it, then reads the entry again). The caller
   * completes the request (its data is written). False: nothing was claimed (the write faults as before); a
   * granted segment `write` may have touched is dropped, never claimed later as zeros.
   */
  claimCow(segment: number, whole: boolean, table: MappingTable, sync: Int32Array, dirty: Int32Array,
    write: (container: number, offset: number, from: { container: number; offset: number }) => boolean): boolean {
    const need = whole ? COW_WHOLE : COW_COPY;
    if (this.size === 0 || Atomics.load(this.h, H_FD) === 0 || Atomics.load(this.h, H_COW) < need) return false;
    this.lock();
    try {
      const fd = this.claimable(segment);
      if (fd < 0 || this.h[H_COW] < need) return false;
      const old = table.get(segment);
      if (old.states !== STATE_NO_WRITE) return false;
      // Taken before the write: a failed or partial write leaves bytes there that are not zeros, so the grant
      // must never serve a later claim (freed unclaimed, the controller zeroes it before any reuse).
      const { container, offset } = this.pop()!;
      markDirty(dirty, container);
      if (!write(container, offset, old) || !this.recorded(fd, segment, container, offset, true)) return false;
      failpoint('agent.cow-claimed');
      Atomics.add(sync, SYNC_MAPPED, 1);
      table.setRange(segment, 1, { states: 0, container, offset, alt: 0 });
      return true;
    } finally {
      this.unlock();
    }
  }
}
