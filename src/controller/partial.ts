// Partial writes to shared segments (`--partial bitmap`): instead of copying a whole segment, a write's
// blocks are copied from the shared segment to the disk's own alternate segment, marked in a bitmap, and
// the write goes there; reads merge the two block by block (src/io/translator.ts). Folding copies the
// unmarked blocks too and makes the alternate the entry's plain, private location. Each function is one
// store transaction; the copies run inside it, so no bitmap bit commits before its block holds the data.
import { VdiskError } from '../errors.js';
import { ALT_BLOCK, ALT_BLOCK_SHIFT, altLayout, bitmapBytes, countBits, hasBit, setBits } from '../table/alternates.js';
import { LOCATION_UNIT, STATE_ALTERNATE, STATE_NO_WRITE, type Entry } from '../table/mapping-table.js';
import type { Disk, Store } from './store.js';
import { releaseUnlessShared } from './sharing.js';

export interface AltRecord { slot: number; container: number; offset: number; bitmap: Buffer }
export interface Location { container: number; offset: number }
/** Copies byte ranges [offset, offset + length) of a segment between two locations, durably. */
export type CopyRanges = (from: Location, to: Location, ranges: Array<[number, number]>) => Promise<void>;

/** Fold once this share of a segment's blocks lives at the alternate: the rest is cheaper to copy than to track. */
export const FOLD_FRACTION = 0.5;

interface AltRow { segment: number; slot: number; container_id: number; unit: number; bitmap: Buffer }
const toRecord = (r: AltRow): AltRecord => ({ slot: r.slot, container: r.container_id, offset: r.unit * LOCATION_UNIT, bitmap: r.bitmap });

export async function alternateOf(store: Store, diskId: number, segment: number): Promise<AltRecord | undefined> {
  const r = await store.db.get<AltRow>('SELECT * FROM alternates WHERE disk_id = ? AND segment = ?', [diskId, segment]);
  return r ? toRecord(r) : undefined;
}

export async function listAlternates(store: Store, diskId: number): Promise<Array<AltRecord & { segment: number }>> {
  const rows = await store.db.all<AltRow>('SELECT * FROM alternates WHERE disk_id = ? ORDER BY segment', [diskId]);
  return rows.map((r) => ({ ...toRecord(r), segment: r.segment }));
}

/** Blocks of [offset, offset + length) not yet marked, as merged byte ranges of whole blocks. */
function missing(bitmap: Buffer, offset: number, length: number): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  for (let b = offset >>> ALT_BLOCK_SHIFT, last = (offset + length - 1) >>> ALT_BLOCK_SHIFT; b <= last; b++) {
    if (hasBit(bitmap, b)) continue;
    const prev = out[out.length - 1];
    if (prev && prev[0] + prev[1] === b * ALT_BLOCK) prev[1] += ALT_BLOCK;
    else out.push([b * ALT_BLOCK, ALT_BLOCK]);
  }
  return out;
}

export interface AltWrite { entry: Entry; alternate: AltRecord; blocks: number; total: number }

/**
 * A write to [offset, offset + length) of a shared (No-write) or Alternate entry: its blocks move to the
 * disk's alternate segment (created with a free slot on first use). Returns null when the entry is neither,
 * or when every slot is taken (the caller then copies the whole segment).
 */
export async function writeToAlternate(store: Store, disk: Disk, segment: number, offset: number, length: number, copy: CopyRanges): Promise<AltWrite | null> {
  if (!Number.isInteger(offset) || !Number.isInteger(length) || offset < 0 || length <= 0 || offset + length > disk.segmentSize) {
    throw new VdiskError(`write of ${length} bytes at ${offset} is outside a ${disk.segmentSize}-byte segment`, { code: 'ERANGE' });
  }
  const total = disk.segmentSize / ALT_BLOCK;
  return store.updateEntry(disk, segment, async (e, put) => {
    if (e.states & STATE_ALTERNATE) {
      const a = await alternateOf(store, disk.id, segment);
      if (!a) throw new VdiskError(`${disk.name} segment ${segment} is Alternate without an alternate location: run vdisk check`, { code: 'EIO' });
      const ranges = missing(a.bitmap, offset, length);
      if (ranges.length) {
        await copy(e, a, ranges);
        setBits(a.bitmap, offset, length);
        await store.db.run('UPDATE alternates SET bitmap = ? WHERE disk_id = ? AND segment = ?', [a.bitmap, disk.id, segment]);
      }
      return { entry: e, alternate: a, blocks: countBits(a.bitmap), total };
    }
    if (!(e.states & STATE_NO_WRITE)) return null;
    const used = await store.db.all<{ slot: number }>('SELECT slot FROM alternates WHERE disk_id = ? ORDER BY slot', [disk.id]);
    let slot = 0;
    while (slot < used.length && used[slot].slot === slot) slot++;
    if (slot >= altLayout(disk).slots) return null;
    const loc = await store.allocateUnits(disk);
    const a: AltRecord = { slot, container: loc.container, offset: loc.offset, bitmap: Buffer.alloc(bitmapBytes(disk.segmentSize)) };
    await copy(e, a, missing(a.bitmap, offset, length));
    setBits(a.bitmap, offset, length);
    await store.db.run('INSERT INTO alternates (disk_id, segment, slot, container_id, unit, bitmap) VALUES (?, ?, ?, ?, ?, ?)',
      [disk.id, segment, slot, a.container, a.offset / LOCATION_UNIT, a.bitmap]);
    // The shared segment keeps this disk's reference: unmarked blocks are still read from it.
    const entry: Entry = { ...e, states: (e.states & ~STATE_NO_WRITE) | STATE_ALTERNATE, alt: slot };
    await put(entry);
    return { entry, alternate: a, blocks: countBits(a.bitmap), total };
  });
}

/**
 * Makes an Alternate entry plain: the unmarked blocks are copied into the alternate segment, which becomes
 * the entry's location; the shared segment loses this disk's reference. Returns null if there was nothing
 * to fold. The caller pushes the new entry with the blocking flag before the slot is used again.
 */
export async function fold(store: Store, disk: Disk, segment: number, copy: CopyRanges): Promise<Entry | null> {
  return store.updateEntry(disk, segment, async (e, put) => {
    if (!(e.states & STATE_ALTERNATE)) return null;
    const a = await alternateOf(store, disk.id, segment);
    if (!a) throw new VdiskError(`${disk.name} segment ${segment} is Alternate without an alternate location: run vdisk check`, { code: 'EIO' });
    const ranges = missing(a.bitmap, 0, disk.segmentSize);
    if (ranges.length) await copy(e, a, ranges);
    const entry: Entry = { states: e.states & ~(STATE_ALTERNATE | STATE_NO_WRITE), container: a.container, offset: a.offset, alt: 0 };
    await put(entry);
    await releaseUnlessShared(store, disk, segment, e);
    await store.db.run('DELETE FROM alternates WHERE disk_id = ? AND segment = ?', [disk.id, segment]);
    return entry;
  });
}
