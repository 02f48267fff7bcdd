// Alternate locations of a disk's partially rewritten shared segments (state Alternate): per slot, a segment
// in some container and a bitmap of ALT_BLOCK-sized blocks that live there instead of in the entry's own
// (shared) location. The records sit in the same SharedArrayBuffer as the entries, after them. Only the
// agent's main thread writes; the location is written before any entry names the slot, and while an entry
// names it the bitmap only gains bits, so a worker that read the entry may read the record without a seqlock.
// A slot is rewritten only after the entry left it and a blocking command drained the I/O planned before.

/** Granularity of alternate bitmaps: a write to a shared segment copies at most this much per block it touches. */
export const ALT_BLOCK = 4096;
export const ALT_BLOCK_SHIFT = 12;
/** Slots per table (fewer if the table has fewer segments): the controller folds or copies when they run out. */
export const ALT_SLOTS = 1024;

const W_CONTAINER = 0;
const W_UNIT = 1;
const W_BITS = 2;
const LOCATION_UNIT = 64 * 1024;

export interface AltShape { segments: number; segmentSize: number }

export function altLayout(shape: AltShape): { slots: number; bitWords: number; stride: number } {
  const bitWords = Math.max(1, shape.segmentSize / ALT_BLOCK / 32);
  const slots = Math.min(shape.segments, ALT_SLOTS);
  return { slots, bitWords, stride: W_BITS + bitWords };
}

/** Bytes of a bitmap for segments of this size, as carried in messages and stored in SQLite. */
export function bitmapBytes(segmentSize: number): number {
  return Math.max(1, segmentSize / ALT_BLOCK / 32) * 4;
}

export class AltTable {
  readonly words: Int32Array;
  readonly slots: number;
  readonly bitWords: number;
  private readonly stride: number;

  constructor(buffer: SharedArrayBuffer, byteOffset: number, shape: AltShape) {
    const l = altLayout(shape);
    this.slots = l.slots;
    this.bitWords = l.bitWords;
    this.stride = l.stride;
    this.words = new Int32Array(buffer, byteOffset, l.slots * l.stride);
  }

  static byteLength(shape: AltShape): number {
    const l = altLayout(shape);
    return l.slots * l.stride * 4;
  }

  container(slot: number): number {
    return Atomics.load(this.words, slot * this.stride + W_CONTAINER);
  }

  /** Byte offset of the alternate segment in its container. */
  offset(slot: number): number {
    return (Atomics.load(this.words, slot * this.stride + W_UNIT) >>> 0) * LOCATION_UNIT;
  }

  /** Whether block `block` of the segment lives at the alternate location. */
  has(slot: number, block: number): boolean {
    const w = Atomics.load(this.words, slot * this.stride + W_BITS + (block >>> 5));
    return (w & (1 << (block & 31))) !== 0;
  }

  /** Whether every block touched by [offset, offset + length) of the segment lives at the alternate location. */
  covers(slot: number, offset: number, length: number): boolean {
    for (let b = offset >>> ALT_BLOCK_SHIFT, last = (offset + length - 1) >>> ALT_BLOCK_SHIFT; b <= last; b++) {
      if (!this.has(slot, b)) return false;
    }
    return true;
  }

  /** Replaces the record (a slot no entry names) or adds bits to it (bits only ever grow while named). */
  set(slot: number, container: number, offset: number, bitmap: Uint8Array): void {
    this.checkSlot(slot);
    if (bitmap.byteLength !== this.bitWords * 4) throw new RangeError(`bitmap of ${bitmap.byteLength} bytes, expected ${this.bitWords * 4}`);
    if (offset % LOCATION_UNIT !== 0 || offset / LOCATION_UNIT > 0xffffffff) throw new RangeError(`alternate location ${offset} is not a multiple of 64 KiB`);
    const base = slot * this.stride;
    const dv = new DataView(bitmap.buffer, bitmap.byteOffset, bitmap.byteLength);
    Atomics.store(this.words, base + W_CONTAINER, container);
    Atomics.store(this.words, base + W_UNIT, (offset / LOCATION_UNIT) | 0);
    for (let k = 0; k < this.bitWords; k++) Atomics.store(this.words, base + W_BITS + k, dv.getInt32(k * 4, true));
  }

  bitmap(slot: number): Buffer {
    this.checkSlot(slot);
    const out = Buffer.alloc(this.bitWords * 4);
    for (let k = 0; k < this.bitWords; k++) out.writeInt32LE(Atomics.load(this.words, slot * this.stride + W_BITS + k), k * 4);
    return out;
  }

  private checkSlot(slot: number): void {
    if (!Number.isInteger(slot) || slot < 0 || slot >= this.slots) throw new RangeError(`alternate slot ${slot} outside 0..${this.slots - 1}`);
  }
}

/** Helpers on bitmaps held as Buffers (controller side). */
export function setBits(bitmap: Buffer, offset: number, length: number): number {
  let added = 0;
  for (let b = offset >>> ALT_BLOCK_SHIFT, last = (offset + length - 1) >>> ALT_BLOCK_SHIFT; b <= last; b++) {
    const byte = b >>> 3;
    const mask = 1 << (b & 7);
    if ((bitmap[byte] & mask) === 0) {
      bitmap[byte] |= mask;
      added++;
    }
  }
  return added;
}

export function hasBit(bitmap: Buffer, block: number): boolean {
  return (bitmap[block >>> 3] & (1 << (block & 7))) !== 0;
}

export function countBits(bitmap: Buffer): number {
  let n = 0;
  for (const byte of bitmap) for (let v = byte; v; v &= v - 1) n++;
  return n;
}
