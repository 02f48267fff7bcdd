// Copy-out (`--cow copy-out`): a write to a shared segment leaves the segment with the writer and moves the
// other sharers to a copy. Sharing preserves the index (snapshots and clones copy tables entry for entry, and
// every remap keeps the index), so the sharers of segment i of a disk are entry i of other disks: that is
// the reverse map. The writer may write only once every agent of every other sharer maps the copy; until
// the controller has pushed that (blocking), a `copyouts` row stays, and the writer's faults wait for it.
import { VdiskError } from '../errors.js';
import { CHUNK_ENTRIES, decodeEntry, encodeEntry } from '../table/entry-codec.js';
import { LOCATION_UNIT, STATE_NO_WRITE, type Entry } from '../table/mapping-table.js';
import { isMapped, type Disk, type Store } from './store.js';

export interface CopyOut { entry: Entry; moved: number[] }

/**
 * One transaction: copy the shared segment (inside it), remap every other sharer's entry to the copy, move
 * the references, clear the writer's No-write, record the pending pushes. Null when the entry is not shared
 * No-write any more; `moved` is empty when nobody else references the segment (No-write just clears).
 */
export async function copyOut(store: Store, disk: Disk, segment: number, copy: (from: Entry, to: Entry, length: number) => Promise<void>): Promise<CopyOut | null> {
  return store.updateEntry(disk, segment, async (e, put) => {
    if (!isMapped(e) || !(e.states & STATE_NO_WRITE)) return null;
    if (disk.readOnly) throw new VdiskError(`${disk.name} is a read-only snapshot`, { code: 'EROFS' });
    const unit = e.offset / LOCATION_UNIT;
    const a = await store.db.get<{ refcount: number }>('SELECT refcount FROM allocations WHERE container_id = ? AND unit = ?', [e.container, unit]);
    const entry = { ...e, states: e.states & ~STATE_NO_WRITE };
    if (!a || a.refcount <= 1) {
      await put(entry);
      return { entry, moved: [] };
    }
    const fresh = await store.allocateUnits(disk);
    await copy(e, fresh, disk.segmentSize);
    const moved: number[] = [];
    for (const other of await store.listDisks()) {
      if (other.id === disk.id || other.segmentSize !== disk.segmentSize || other.segments <= segment) continue;
      const chunk = Math.floor(segment / CHUNK_ENTRIES);
      const data = await store.chunk(other, chunk);
      const k = segment - chunk * CHUNK_ENTRIES;
      const x = decodeEntry(data, k);
      if (!isMapped(x) || x.container !== e.container || x.offset !== e.offset) continue;
      encodeEntry(data, k, { ...x, container: fresh.container, offset: fresh.offset });
      await store.putChunk(other.id, chunk, data);
      moved.push(other.id);
    }
    if (moved.length !== a.refcount - 1) {
      throw new VdiskError(`segment ${e.container}/${unit} has ${a.refcount} references but ${moved.length + 1} sharers at index ${segment}: run vdisk check`, { code: 'EIO' });
    }
    await store.db.run('UPDATE allocations SET refcount = ? WHERE container_id = ? AND unit = ?', [moved.length, fresh.container, fresh.offset / LOCATION_UNIT]);
    await store.db.run('UPDATE allocations SET refcount = 1 WHERE container_id = ? AND unit = ?', [e.container, unit]);
    await store.db.run('INSERT OR REPLACE INTO copyouts (disk_id, segment, disks) VALUES (?, ?, ?)', [disk.id, segment, JSON.stringify(moved)]);
    await put(entry);
    return { entry, moved };
  });
}

/** The disks whose agents must still be told about a copy-out of this segment, or null if none is pending. */
export async function copyOutPending(store: Store, diskId: number, segment: number): Promise<number[] | null> {
  const row = await store.db.get<{ disks: string }>('SELECT disks FROM copyouts WHERE disk_id = ? AND segment = ?', [diskId, segment]);
  return row ? (JSON.parse(row.disks) as number[]) : null;
}

export async function copyOutDone(store: Store, diskId: number, segment: number): Promise<void> {
  await store.db.transaction(async () => {
    await store.db.run('DELETE FROM copyouts WHERE disk_id = ? AND segment = ?', [diskId, segment]);
  });
}
