// Who shares a segment. Snapshots and clones copy tables entry for entry and every later remap keeps the
// index, so a segment is only ever shared at one index, among the disks of one family (an origin and every
// snapshot and clone descended from it). Sharing is therefore read from the family's tables when it matters
// (a write to a No-write segment, a release, `vdisk info`) instead of being counted per segment: that makes a
// snapshot cost the same whatever the disk holds (it copies the table and sets No-write, nothing per segment).
// Every function runs inside the caller's store transaction.
import { CHUNK_ENTRIES, ENTRY_BYTES } from '../table/entry-codec.js';
import { LOCATION_UNIT, STATE_INVALID, STATE_ZERO, type Entry } from '../table/mapping-table.js';
import type { Disk, Store } from './store.js';
import type { ProgressFn } from './progress.js';

/** The entry references storage (Invalid and Zero entries reference nothing; Error ones still own theirs). */
export function isMapped(e: Entry): boolean {
  return (e.states & (STATE_INVALID | STATE_ZERO)) === 0;
}

/** isMapped on an entry in the stored layout: its state byte is the low byte of the second word. */
export function mappedAt(buf: Buffer, k: number): boolean {
  return (buf[k * ENTRY_BYTES + 4] & (STATE_INVALID | STATE_ZERO)) === 0;
}

/** Whether entry k of a names the same location as entry j of b (both mapped). */
function sameLocation(a: Buffer, k: number, b: Buffer, j: number): boolean {
  const x = k * ENTRY_BYTES;
  const y = j * ENTRY_BYTES;
  // Word 1 without its state byte (the container), then word 2 (the location).
  return a.readUInt32LE(x + 4) >>> 8 === b.readUInt32LE(y + 4) >>> 8 && a.readUInt32LE(x + 8) === b.readUInt32LE(y + 8);
}

/** The other disks of the disk's family that have an entry at `segment`. */
export async function familyOf(store: Store, disk: Disk, segment = 0): Promise<Disk[]> {
  return (await store.listDisks()).filter((d) => d.id !== disk.id && d.family === disk.family && d.segments > segment);
}

/** Whether entry k of a stored chunk is mapped and names location `at`. */
function namesAt(data: Buffer, k: number, at: { container: number; offset: number }): boolean {
  return mappedAt(data, k) && data.readUInt32LE(k * ENTRY_BYTES + 4) >>> 8 === at.container && data.readUInt32LE(k * ENTRY_BYTES + 8) * LOCATION_UNIT === at.offset;
}

/** The other disks whose entry `segment` names location `at`. */
export async function sharers(store: Store, disk: Disk, segment: number, at: { container: number; offset: number }): Promise<Disk[]> {
  const out: Disk[] = [];
  const chunk = Math.floor(segment / CHUNK_ENTRIES);
  for (const other of await familyOf(store, disk, segment)) {
    if (namesAt(await store.tables.chunk(other, chunk), segment - chunk * CHUNK_ENTRIES, at)) out.push(other);
  }
  return out;
}

/**
 * For many entries of one disk (a batch): whether another disk of its family names each one's location at
 * its index. The family is listed once and each member's chunk read once, however many entries it holds.
 */
export async function sharedMany(store: Store, disk: Disk, items: Array<{ segment: number; at: { container: number; offset: number } }>): Promise<boolean[]> {
  const family = await familyOf(store, disk);
  const read = new Map<string, Buffer>();
  const out: boolean[] = [];
  for (const { segment, at } of items) {
    const chunk = Math.floor(segment / CHUNK_ENTRIES);
    let shared = false;
    for (const other of family) {
      if (other.segments <= segment) continue;
      const key = `${other.id}/${chunk}`;
      let data = read.get(key);
      if (!data) read.set(key, (data = await store.tables.chunk(other, chunk)));
      if ((shared = namesAt(data, segment - chunk * CHUNK_ENTRIES, at))) break;
    }
    out.push(shared);
  }
  return out;
}

/** Frees the segment the disk's entry `segment` named unless another disk of its family still names it there. */
export async function releaseUnlessShared(store: Store, disk: Disk, segment: number, at: { container: number; offset: number }): Promise<boolean> {
  if ((await sharers(store, disk, segment, at)).length > 0) return false;
  await store.alloc.free(at.container, at.offset / LOCATION_UNIT, disk.segmentSize / LOCATION_UNIT);
  return true;
}

/**
 * Walks the disk's stored chunks beside the same chunks of its family: fn(chunk data, k, shared) for each
 * mapped entry, shared telling whether another family member names the same location at that index.
 */
export async function eachMapped(store: Store, disk: Disk, fn: (data: Buffer, k: number, index: number, shared: boolean) => Promise<void> | void,
  progress?: ProgressFn): Promise<void> {
  const family = await familyOf(store, disk);
  for await (const { chunk, data } of store.tables.chunks(disk)) {
    progress?.(Math.min(disk.segments, chunk * CHUNK_ENTRIES), disk.segments);
    const others: Buffer[] = [];
    for (const f of family) if (f.segments > chunk * CHUNK_ENTRIES) others.push(await store.tables.chunk(f, chunk));
    const n = data.length / ENTRY_BYTES;
    for (let k = 0; k < n; k++) {
      if (!mappedAt(data, k)) continue;
      const shared = others.some((o) => k < o.length / ENTRY_BYTES && mappedAt(o, k) && sameLocation(data, k, o, k));
      await fn(data, k, chunk * CHUNK_ENTRIES + k, shared);
    }
  }
  progress?.(disk.segments, disk.segments);
}
