// Byte layout of table entries outside the SharedArrayBuffer (SQLite chunks, bulk transfers): the same four
// little-endian u32 words as MappingTable uses in memory, with the seqlock word stored as 0, so a bulk load
// is a plain copy into the agent's table.
import { LOCATION_UNIT, type Entry } from './mapping-table.js';

export const ENTRY_BYTES = 16;
/** Entries per stored chunk: 16 KiB rows, 1024 rows for a 1 TiB disk of 1 MiB segments. */
export const CHUNK_ENTRIES = 1024;

export function encodeEntry(buf: Buffer, index: number, e: Entry): void {
  const o = index * ENTRY_BYTES;
  buf.writeUInt32LE(0, o);
  buf.writeUInt32LE(((e.container << 8) | e.states) >>> 0, o + 4);
  buf.writeUInt32LE(e.offset / LOCATION_UNIT, o + 8);
  buf.writeUInt32LE(e.alt >>> 0, o + 12);
}

export function decodeEntry(buf: Buffer, index: number): Entry {
  const o = index * ENTRY_BYTES;
  const w = buf.readUInt32LE(o + 4);
  return { states: w & 0xff, container: w >>> 8, offset: buf.readUInt32LE(o + 8) * LOCATION_UNIT, alt: buf.readUInt32LE(o + 12) };
}

/** A chunk of `count` entries all equal to e. */
export function filledChunk(count: number, e: Entry): Buffer {
  const buf = Buffer.alloc(count * ENTRY_BYTES);
  encodeEntry(buf, 0, e);
  for (let filled = ENTRY_BYTES; filled < buf.length; filled *= 2) buf.copy(buf, filled, 0, Math.min(filled, buf.length - filled));
  return buf;
}
