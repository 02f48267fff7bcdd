// The mapping table of one virtual disk, in a SharedArrayBuffer shared by the agent's main thread (the
// writer) and the queue workers (readers; a worker writes only a Zero entry it claims, under the disk's claim
// lock, while no other writer can touch that entry: see io/claim-ring.ts). Each entry is four Int32 words: a
// seqlock counter, the state bits with the container id, the location in 64 KiB units, and the
// alternate-location index. Writers make the counter odd, store, then make it even again; readers retry on
// an odd or changed counter, so no reader ever sees a torn location/state pair. JS Atomics are sequentially
// consistent, which orders the word accesses.
// The alternate-location records (alternates.ts) follow the entries in the same buffer.
import { AltTable } from './alternates.js';

export const STATE_INVALID = 1;
export const STATE_NO_WRITE = 2;
export const STATE_ZERO = 4;
export const STATE_ERROR = 8;
/** Some blocks of the segment live at an alternate location (the entry's alt word names the slot, see alternates.ts). */
export const STATE_ALTERNATE = 16;
export const STATE_MASK = 0xff;

/** Locations are stored in units of the smallest segment size, so one u32 addresses 256 TiB per container. */
export const LOCATION_UNIT = 64 * 1024;
export const MIN_SEGMENT_SIZE = 64 * 1024;
export const MAX_SEGMENT_SIZE = 64 * 1024 * 1024;
export const MAX_CONTAINER_ID = 0xffffff;
/**
 * Entries per disk: a table of at most 4 GiB, which is what one Buffer holds in the controller and what an
 * agent can keep in memory; 256 TiB with 1 MiB segments. Every command handles every disk up to it.
 */
export const MAX_SEGMENTS = 2 ** 28;

const WORDS = 4;
const W_SEQ = 0;
const W_STATE = 1;
const W_LOC = 2;
const W_ALT = 3;

export interface Entry {
  states: number;
  container: number;
  /** Byte offset of the segment in its container (a multiple of LOCATION_UNIT). */
  offset: number;
  alt: number;
}

export interface TableShape {
  segments: number;
  segmentSize: number;
}

export function stateNames(states: number): string[] {
  const names: string[] = [];
  if (states & STATE_INVALID) names.push('I');
  if (states & STATE_NO_WRITE) names.push('Nw');
  if (states & STATE_ZERO) names.push('Z');
  if (states & STATE_ERROR) names.push('E');
  if (states & STATE_ALTERNATE) names.push('A');
  return names;
}

export function checkSegmentSize(segmentSize: number): void {
  if (!Number.isInteger(segmentSize) || segmentSize < MIN_SEGMENT_SIZE || segmentSize > MAX_SEGMENT_SIZE ||
      (segmentSize & (segmentSize - 1)) !== 0) {
    throw new RangeError(`segment size must be a power of two from 64K to 64M, not ${segmentSize}`);
  }
}

/** The size limit of a disk of this segment size, for error messages. */
export function maxDiskSize(segmentSize: number): number {
  return Math.min(MAX_SEGMENTS * segmentSize, Number.MAX_SAFE_INTEGER - (Number.MAX_SAFE_INTEGER % segmentSize));
}

export class MappingTable {
  readonly words: Int32Array;
  readonly segments: number;
  readonly segmentSize: number;
  readonly segmentShift: number;
  /** Alternate locations of Alternate entries; absent when the buffer holds entries only. */
  readonly alternates: AltTable | undefined;

  // Result of the last load(): instance fields instead of a returned object keep the hot path allocation-free.
  // Each thread has its own MappingTable object over the shared words, so these are thread-private.
  container = 0;
  offset = 0;
  alt = 0;

  constructor(buffer: SharedArrayBuffer, shape: TableShape) {
    checkSegmentSize(shape.segmentSize);
    if (!Number.isInteger(shape.segments) || shape.segments < 1 || shape.segments > MAX_SEGMENTS) {
      throw new RangeError(`a table has 1..${MAX_SEGMENTS} entries, not ${shape.segments}`);
    }
    if (buffer.byteLength < shape.segments * WORDS * 4) throw new RangeError('table buffer smaller than its entries');
    this.words = new Int32Array(buffer, 0, shape.segments * WORDS);
    this.segments = shape.segments;
    this.segmentSize = shape.segmentSize;
    this.segmentShift = Math.log2(shape.segmentSize);
    const entryBytes = shape.segments * WORDS * 4;
    this.alternates = buffer.byteLength >= entryBytes + AltTable.byteLength(shape) ? new AltTable(buffer, entryBytes, shape) : undefined;
  }

  /** A new table with every entry Invalid, and room for alternate locations. */
  static create(shape: TableShape): MappingTable {
    const table = new MappingTable(new SharedArrayBuffer(shape.segments * WORDS * 4 + AltTable.byteLength(shape)), shape);
    for (let i = 0; i < shape.segments; i++) table.words[i * WORDS + W_STATE] = STATE_INVALID;
    return table;
  }

  get buffer(): SharedArrayBuffer {
    return this.words.buffer as SharedArrayBuffer;
  }

  /** Reads entry i consistently; returns its state bits and leaves container/offset/alt in this object. */
  load(i: number): number {
    const w = this.words;
    const base = i * WORDS;
    for (;;) {
      const seq = Atomics.load(w, base + W_SEQ);
      if ((seq & 1) === 0) {
        const s = Atomics.load(w, base + W_STATE);
        const loc = Atomics.load(w, base + W_LOC);
        const alt = Atomics.load(w, base + W_ALT);
        if (Atomics.load(w, base + W_SEQ) === seq) {
          this.container = s >>> 8;
          this.offset = (loc >>> 0) * LOCATION_UNIT;
          this.alt = alt;
          return s & STATE_MASK;
        }
      }
    }
  }

  get(i: number): Entry {
    this.checkRange(i, 1);
    const states = this.load(i);
    return { states, container: this.container, offset: this.offset, alt: this.alt };
  }

  /** Replaces entries [first, first + count) with one location each: entry k gets offset + k * segmentSize. */
  setRange(first: number, count: number, entry: Entry, advance = true): void {
    this.checkRange(first, count);
    checkEntry(entry);
    const step = advance ? this.segmentSize / LOCATION_UNIT : 0;
    const unit0 = entry.offset / LOCATION_UNIT;
    if (count > 0 && unit0 + (count - 1) * step > 0xffffffff) throw new RangeError('range runs past 256 TiB of container');
    for (let k = 0; k < count; k++) this.store(first + k, entry.states, entry.container, unit0 + k * step, entry.alt);
  }

  /**
   * Sets (set=true) or clears state bits over a range, keeping each entry's location. Only the state word
   * changes, in one atomic operation, so no reader can pair it with another location: the seqlock is not
   * needed (and a million entries take a few milliseconds, not a hundred). Only the owning thread writes.
   */
  changeStates(first: number, count: number, bits: number, set: boolean): void {
    this.checkRange(first, count);
    if ((bits & ~STATE_MASK) !== 0) throw new RangeError(`unknown state bits ${bits}`);
    const w = this.words;
    for (let i = first; i < first + count; i++) {
      if (set) Atomics.or(w, i * WORDS + W_STATE, bits);
      else Atomics.and(w, i * WORDS + W_STATE, ~bits);
    }
  }

  /**
   * Bulk load: entries [first, first + n) from bytes in the stored layout (see entry-codec.ts: four LE u32
   * words per entry, the first ignored). Each entry still goes through the seqlock, so workers may keep
   * reading while a table loads.
   */
  loadBytes(first: number, bytes: Uint8Array): void {
    if (bytes.byteLength % (WORDS * 4) !== 0) throw new RangeError('table bytes are not a whole number of entries');
    const n = bytes.byteLength / (WORDS * 4);
    this.checkRange(first, n);
    const src = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    for (let k = 0; k < n; k++) {
      const o = k * WORDS * 4;
      const s = src.getUint32(o + 4, true);
      this.store(first + k, s & STATE_MASK, s >>> 8, src.getUint32(o + 8, true), src.getInt32(o + 12, true));
    }
  }

  private store(i: number, states: number, container: number, unit: number, alt: number): void {
    const w = this.words;
    const base = i * WORDS;
    const seq = w[base + W_SEQ];
    Atomics.store(w, base + W_SEQ, seq + 1);
    Atomics.store(w, base + W_STATE, (container << 8) | states);
    Atomics.store(w, base + W_LOC, unit | 0);
    Atomics.store(w, base + W_ALT, alt);
    Atomics.store(w, base + W_SEQ, seq + 2);
  }

  private checkRange(first: number, count: number): void {
    if (!Number.isInteger(first) || !Number.isInteger(count) || first < 0 || count < 0 || first + count > this.segments) {
      throw new RangeError(`entries ${first}..${first + count - 1} outside table of ${this.segments}`);
    }
  }
}

function checkEntry(e: Entry): void {
  if (!Number.isInteger(e.container) || e.container < 0 || e.container > MAX_CONTAINER_ID) {
    throw new RangeError(`container id ${e.container} out of range`);
  }
  if (!Number.isInteger(e.offset) || e.offset < 0 || e.offset % LOCATION_UNIT !== 0 || e.offset / LOCATION_UNIT > 0xffffffff) {
    throw new RangeError(`location ${e.offset} is not a multiple of 64 KiB below 256 TiB`);
  }
  if ((e.states & ~STATE_MASK) !== 0) throw new RangeError(`unknown state bits ${e.states}`);
}
