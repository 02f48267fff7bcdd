// Partial writes to shared segments (`--partial bitmap`): instead of copying a whole segment, a write's
// blocks are copied from the shared segment to the disk's own alternate segment, marked in a bitmap, and
// the write goes there; reads merge the two block by block (src/io/translator.ts). Folding copies the
// unmarked blocks too and makes the alternate the entry's plain, private location. Each function is a
// staged store flow (store.alloc.staged): the copies run between its two transactions, and no bitmap bit
// commits before its block holds the data.
import { VdiskError } from '../errors.js';
import { ALT_BLOCK, ALT_BLOCK_SHIFT, altLayout, bitmapBytes, countBits, hasBit, setBits } from '../table/alternates.js';
import { LOCATION_UNIT, STATE_ALTERNATE, STATE_NO_WRITE, type Entry } from '../table/mapping-table.js';
import { RETRY } from './segment-alloc.js';
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
  // The copies run between the store's two transactions (store.alloc.staged): blocks not yet marked in a bitmap
  // are never read from the alternate, and a new alternate is named by nothing until the second commits.
  return store.alloc.staged<AltWrite | null>(disk, segment, async (e, _put, reserve) => {
    if (e.states & STATE_ALTERNATE) {
      const a = await alternateOf(store, disk.id, segment);
      if (!a) throw new VdiskError(`${disk.name} segment ${segment} is Alternate without an alternate location: run vdisk check`, { code: 'EIO' });
      const ranges = missing(a.bitmap, offset, length);
      if (!ranges.length) return { done: { entry: e, alternate: a, blocks: countBits(a.bitmap), total } };
      return {
        io: () => copy(e, a, ranges),
        commit: async (e2) => {
          const now = await alternateOf(store, disk.id, segment);
          if (!now || now.slot !== a.slot || now.container !== a.container || now.offset !== a.offset) return RETRY;
          setBits(now.bitmap, offset, length);
          await store.db.run('UPDATE alternates SET bitmap = ? WHERE disk_id = ? AND segment = ?', [now.bitmap, disk.id, segment]);
          return { entry: e2, alternate: now, blocks: countBits(now.bitmap), total };
        },
      };
    }
    if (!(e.states & STATE_NO_WRITE)) return { done: null };
    const slot = await freeSlot(store, disk.id);
    if (slot >= altLayout(disk).slots) return { done: null };
    const loc = await reserve();
    const a: AltRecord = { slot, container: loc.container, offset: loc.offset, bitmap: Buffer.alloc(bitmapBytes(disk.segmentSize)) };
    return {
      io: () => copy(e, a, missing(a.bitmap, offset, length)),
      commit: async (_e, put, use) => {
        if (await freeSlot(store, disk.id) !== slot) return RETRY;
        await use(loc);
        setBits(a.bitmap, offset, length);
        await store.db.run('INSERT INTO alternates (disk_id, segment, slot, container_id, unit, bitmap) VALUES (?, ?, ?, ?, ?, ?)',
          [disk.id, segment, slot, a.container, a.offset / LOCATION_UNIT, a.bitmap]);
        // The shared segment keeps this disk's reference: unmarked blocks are still read from it.
        const entry: Entry = { ...e, states: (e.states & ~STATE_NO_WRITE) | STATE_ALTERNATE, alt: slot };
        await put(entry);
        return { entry, alternate: a, blocks: countBits(a.bitmap), total };
      },
    };
  });
}

/** The lowest alternate slot the disk does not use. */
async function freeSlot(store: Store, diskId: number): Promise<number> {
  const used = await store.db.all<{ slot: number }>('SELECT slot FROM alternates WHERE disk_id = ? ORDER BY slot', [diskId]);
  let slot = 0;
  while (slot < used.length && used[slot].slot === slot) slot++;
  return slot;
}

/**
 * Makes an Alternate entry plain: the unmarked blocks are copied into the alternate segment, which becomes
 * the entry's location; the shared segment loses this disk's reference. Returns null if there was nothing
 * to fold. The caller pushes the new entry with the blocking flag before the slot is used again.
 */
export async function fold(store: Store, disk: Disk, segment: number, copy: CopyRanges): Promise<Entry | null> {
  return store.alloc.staged<Entry | null>(disk, segment, async (e) => {
    if (!(e.states & STATE_ALTERNATE)) return { done: null };
    const a = await alternateOf(store, disk.id, segment);
    if (!a) throw new VdiskError(`${disk.name} segment ${segment} is Alternate without an alternate location: run vdisk check`, { code: 'EIO' });
    const ranges = missing(a.bitmap, 0, disk.segmentSize);
    return {
      // Unmarked blocks of the alternate are read by nobody until the entry below commits.
      io: async () => { if (ranges.length) await copy(e, a, ranges); },
      commit: async (e2, put) => {
        const now = await alternateOf(store, disk.id, segment);
        if (!now || now.container !== a.container || now.offset !== a.offset || !now.bitmap.equals(a.bitmap)) return RETRY;
        const entry: Entry = { states: e2.states & ~(STATE_ALTERNATE | STATE_NO_WRITE), container: a.container, offset: a.offset, alt: 0 };
        await put(entry);
        await releaseUnlessShared(store, disk, segment, e2);
        await store.db.run('DELETE FROM alternates WHERE disk_id = ? AND segment = ?', [disk.id, segment]);
        return entry;
      },
    };
  });
}
