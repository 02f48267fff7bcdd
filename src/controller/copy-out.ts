// Copy-out (`--cow copy-out`): a write to a shared segment leaves the segment with the writer and moves the
// other sharers to a copy. Sharing preserves the index (see sharing.ts), so the sharers of segment i of a
// disk are entry i of other disks of its family: that is the reverse map. The writer may write only once every agent of every other sharer maps the copy; until
// the controller has pushed that (blocking), a `copyouts` row stays, and the writer's faults wait for it.
import { VdiskError } from '../errors.js';
import { CHUNK_ENTRIES, decodeEntry, encodeEntry } from '../table/entry-codec.js';
import { STATE_NO_WRITE, type Entry } from '../table/mapping-table.js';
import { isMapped, sharers } from './sharing.js';
import type { Disk, Store } from './store.js';

export interface CopyOut { entry: Entry; moved: number[] }

/**
 * Copies the shared segment into a reserved one (outside any transaction), then in one transaction remaps
 * every other sharer's entry to the copy, moves the references, clears the writer's No-write and records
 * the pending pushes. Null when the entry is not shared No-write any more; `moved` is empty when nobody
 * else references the segment (No-write just clears).
 */
export async function copyOut(store: Store, disk: Disk, segment: number, copy: (from: Entry, to: Entry, length: number) => Promise<void>): Promise<CopyOut | null> {
  const chunk = Math.floor(segment / CHUNK_ENTRIES);
  const k = segment - chunk * CHUNK_ENTRIES;
  return store.alloc.staged<CopyOut | null>(disk, segment, async (e, put, reserve) => {
    if (!isMapped(e) || !(e.states & STATE_NO_WRITE)) return { done: null };
    if (disk.readOnly) throw new VdiskError(`${disk.name} is a read-only snapshot`, { code: 'EROFS' });
    const entry = { ...e, states: e.states & ~STATE_NO_WRITE };
    if ((await sharers(store, disk, segment, e)).length === 0) {
      await put(entry);
      return { done: { entry, moved: [] } };
    }
    const fresh = await reserve();
    return {
      // Every sharer maps the segment No-write and the writer waits for this flow: it holds still.
      io: () => copy(e, fresh, disk.segmentSize),
      commit: async (_e, put2, use) => {
        // Read again: a sharer may have gone (rm) or moved on its own between the two transactions.
        const others = await sharers(store, disk, segment, e);
        if (others.length > 0) {
          await use(fresh);
          for (const other of others) {
            const data = await store.tables.chunk(other, chunk);
            encodeEntry(data, k, { ...decodeEntry(data, k), container: fresh.container, offset: fresh.offset });
            await store.tables.putChunk(other.id, chunk, data);
          }
          await store.db.run('INSERT OR REPLACE INTO copyouts (disk_id, segment, disks) VALUES (?, ?, ?)', [disk.id, segment, JSON.stringify(others.map((d) => d.id))]);
        }
        await put2(entry);
        return { entry, moved: others.map((d) => d.id) };
      },
    };
  });
}

/** The disks whose agents must still be told about a copy-out of this segment, or null if none is pending. */
export async function copyOutPending(store: Store, diskId: number, segment: number): Promise<number[] | null> {
  const row = await store.db.get<{ disks: string }>('SELECT disks FROM copyouts WHERE disk_id = ? AND segment = ?', [diskId, segment]);
  return row ? (JSON.parse(row.disks) as number[]) : null;
}

/** The segments of a disk with a copy-out pending (see copyOutPending). */
export async function copyOutsPending(store: Store, diskId: number): Promise<Set<number>> {
  return new Set((await store.db.all<{ segment: number }>('SELECT segment FROM copyouts WHERE disk_id = ?', [diskId])).map((r) => r.segment));
}

export async function copyOutDone(store: Store, diskId: number, segment: number): Promise<void> {
  await store.db.transaction(async () => {
    await store.db.run('DELETE FROM copyouts WHERE disk_id = ? AND segment = ?', [diskId, segment]);
  });
}
