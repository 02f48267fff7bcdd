// Operations that share segments between disks and undo the sharing. A snapshot or clone copies a table and
// sets No-write, so it costs the same whatever the disk holds; a write (copyOnWrite), a discard (reclaim)
// or a migration step then drops one disk's reference. Remaps that need a copy are staged flows
// (segment-alloc.ts; copyOnWriteMany for a batch of faults): the copy runs between the reservation and the
// commit that names it.
import { VdiskError } from '../errors.js';
import { failpoint } from '../util/failpoints.js';
import { runOf, type Allocated } from './allocator.js';
import { sameEntry } from './segment-alloc.js';
import { runsOf } from '../util/runs.js';
import { LOCATION_UNIT, STATE_ALTERNATE, STATE_ERROR, STATE_INVALID, STATE_NO_WRITE, STATE_ZERO, type Entry } from '../table/mapping-table.js';
import { CHUNK_ENTRIES, ENTRY_BYTES, decodeEntry } from '../table/entry-codec.js';
import { checkModes, type Modes } from './modes.js';
import { checkName } from './names.js';
import { isMapped, releaseUnlessShared, sharedMany, sharers } from './sharing.js';
import type { Container, Disk, Store } from './store.js';
import { ZERO_ENTRY } from './tables.js';

export class CowOps {
  constructor(private readonly store: Store) {}

  /**
   * A read-only copy of the disk's table that shares every segment: No-write on each mapped entry of both,
   * one more reference per segment. One transaction; its cost grows with the table, not with the data.
   * The caller has already made every agent stop writing to the disk (No-write with the blocking flag).
   */
  async snapshot(diskName: string, snapName: string): Promise<Disk> {
    checkName('snapshot', snapName);
    return this.store.db.transaction(async () => {
      const from = await this.store.disk(diskName);
      return this.share(from, snapName, true);
    });
  }

  /** A writable disk sharing every segment of a snapshot; writes copy on write. */
  async clone(snapName: string, name: string, modes: Modes = {}): Promise<Disk> {
    checkName('disk', name);
    checkModes(modes);
    return this.store.db.transaction(async () => {
      const from = await this.store.disk(snapName);
      if (!from.readOnly) throw new VdiskError(`${snapName} is not a snapshot: clone a snapshot of it (vdisk snapshot ${snapName} SNAP)`, { code: 'EINVAL' });
      return this.share(from, name, false, modes);
    });
  }

  private async share(from: Disk, name: string, readOnly: boolean, modes: Modes = {}): Promise<Disk> {
    if (await this.store.db.get('SELECT 1 FROM disks WHERE name = ?', [name])) throw new VdiskError(`disk ${name} already exists`, { code: 'EEXIST' });
    // Alternates are per disk: the caller folds them first (a shared table must name only whole segments).
    const alts = await this.store.db.get<{ n: number }>('SELECT COUNT(*) AS n FROM alternates WHERE disk_id = ?', [from.id]);
    if ((alts?.n ?? 0) > 0) throw new VdiskError(`${from.name} has ${alts?.n} alternate location(s): fold them before sharing`, { code: 'EBUSY' });
    const { lastID } = await this.store.db.run(
      'INSERT INTO disks (name, size, segment_size, fill_states, container_id, read_only, parent_id, cow_mode, partial_mode, family_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
      [name, from.size, from.segmentSize, from.fillStates, from.containerId, readOnly ? 1 : 0, from.id, modes.cow ?? from.cow, modes.partial ?? from.partial, from.family]);
    // No-write on every mapped entry of the origin, set on the stored bytes (no decoding: a million entries
    // take milliseconds); the copy carries it too. Nothing is counted per segment (see sharing.ts).
    for await (const r of this.store.tables.chunks(from)) {
      let changed = false;
      for (let o = 4; o < r.data.length; o += ENTRY_BYTES) {
        const s = r.data[o];
        if ((s & (STATE_INVALID | STATE_ZERO)) !== 0 || (s & STATE_NO_WRITE) !== 0) continue;
        r.data[o] = s | STATE_NO_WRITE;
        changed = true;
      }
      if (changed) await this.store.tables.putChunk(from.id, r.chunk, r.data);
    }
    await this.store.db.run('INSERT INTO table_chunks (disk_id, chunk, data) SELECT ?, chunk, data FROM table_chunks WHERE disk_id = ?', [lastID, from.id]);
    return (await this.store.diskById(lastID))!;
  }

  /**
   * A write reached a No-write entry. If its segment is still shared, the disk gets a new segment holding a
   * copy (redirect: `copy` runs between the staged flow's two transactions, before the remap commits) and
   * drops its reference to the old one; if nobody else references it any more, No-write is simply cleared.
   */
  async copyOnWrite(disk: Disk, segment: number, copy: (from: Entry, to: Entry, length: number) => Promise<void>): Promise<{ entry: Entry; remapped: boolean }> {
    return this.store.alloc.staged<{ entry: Entry; remapped: boolean }>(disk, segment, async (e, put, reserve) => {
      if (!isMapped(e) || !(e.states & STATE_NO_WRITE)) return { done: { entry: e, remapped: false } };
      if (disk.readOnly) throw new VdiskError(`${disk.name} is a read-only snapshot`, { code: 'EROFS' });
      if ((await sharers(this.store, disk, segment, e)).length === 0) {
        const entry = { ...e, states: e.states & ~STATE_NO_WRITE };
        await put(entry);
        return { done: { entry, remapped: false } };
      }
      const fresh = await reserve();
      return {
        io: () => copy(e, fresh, disk.segmentSize), // the shared segment is No-write everywhere: it holds still
        commit: async (_e, put2, use) => {
          await use(fresh);
          const entry = { ...fresh, states: e.states & ~STATE_NO_WRITE };
          await put2(entry);
          // Kept if somebody else still names it; freed if its last sharer went meanwhile (a snapshot rm).
          await releaseUnlessShared(this.store, disk, segment, e);
          return { entry, remapped: true };
        },
      };
    });
  }

  /**
   * copyOnWrite for many segments of one disk at once (a batch of copy-on-write faults): one transaction
   * (without its own fsync: it only reserves) reserves a segment for each one still shared, `copy` fills
   * them outside any transaction (it must make them durable, as copyOnWrite's copy does), and one transaction
   * (durable unless `durable: false`, see CowBatcher) remaps every segment whose entry is still the planned one and drops its reference to the
   * shared segment. A segment nobody else shares any more just loses No-write in that commit. Returns the
   * new entries by segment, `remapped` where storage changed; a segment that is not a plain shared one (or
   * changed meanwhile) is absent and its reservation goes back. Passes the staged.* failpoints like
   * copyOnWrite, whose flow this is.
   */
  async copyOnWriteMany(disk: Disk, segments: number[], copy: (items: Array<{ segment: number; from: Entry; to: Allocated }>) => Promise<void>,
    o: { durable?: boolean } = {}): Promise<Map<number, { entry: Entry; remapped: boolean }>> {
    const units = disk.segmentSize / LOCATION_UNIT;
    const unique = [...new Set(segments)].sort((a, b) => a - b);
    const plainShared = (e: Entry) => isMapped(e) && (e.states & STATE_NO_WRITE) !== 0 && (e.states & STATE_ALTERNATE) === 0;
    const planned: Array<{ segment: number; old: Entry; to?: Allocated }> = [];
    if (disk.readOnly) return new Map();
    await this.store.alloc.withFrontier(() => this.store.db.transaction(async () => {
      planned.length = 0; // a transaction refused for zero-ahead reserved nothing
      const now = await this.entriesAt(disk, unique);
      const candidates = unique.filter((s) => plainShared(now.get(s)!)).map((segment) => ({ segment, at: now.get(segment)! }));
      const shared = await sharedMany(this.store, disk, candidates);
      for (const [i, c] of candidates.entries()) {
        planned.push({ segment: c.segment, old: c.at, to: shared[i] ? await this.store.alloc.allocateUnits(disk, undefined, true) : undefined });
      }
    }, { durable: false }));
    const reserved = planned.filter((p) => p.to !== undefined);
    const giveBack = (list: typeof planned) => this.store.db.transaction(async () => {
      for (const p of list) if (p.to) await this.store.alloc.pool.unreserve(runOf(p.to, units));
    });
    const out = new Map<number, { entry: Entry; remapped: boolean }>();
    if (planned.length === 0) return out;
    failpoint('staged.planned');
    try {
      if (reserved.length) await copy(reserved.map((p) => ({ segment: p.segment, from: p.old, to: p.to! })));
      failpoint('staged.io');
      await this.store.db.transaction(async () => {
        const now = await this.entriesAt(disk, planned.map((p) => p.segment));
        const kept = planned.filter((p) => sameEntry(now.get(p.segment)!, p.old));
        for (const p of planned) if (p.to && !kept.includes(p)) await this.store.alloc.pool.unreserve(runOf(p.to, units)); // changed meanwhile
        for (const p of kept) {
          const states = p.old.states & ~STATE_NO_WRITE;
          if (p.to) await this.store.alloc.pool.claim(runOf(p.to, units));
          out.set(p.segment, p.to
            ? { entry: { states, container: p.to.container, offset: p.to.offset, alt: 0 }, remapped: true }
            : { entry: { ...p.old, states }, remapped: false });
        }
        for (const run of runsOf(kept.map((p) => p.segment))) await this.store.tables.setEntries(disk, run[0]!, run.map((s) => out.get(s)!.entry));
        // The old segments are kept if somebody else still names them; freed if their last sharer went
        // meanwhile (a snapshot rm).
        const remapped = kept.filter((p) => p.to);
        const still = await sharedMany(this.store, disk, remapped.map((p) => ({ segment: p.segment, at: p.old })));
        for (const [i, p] of remapped.entries()) if (!still[i]) await this.store.alloc.free(p.old.container, p.old.offset / LOCATION_UNIT, units);
      }, o);
    } catch (err) {
      await giveBack(reserved);
      throw err;
    }
    failpoint('staged.committed');
    return out;
  }

  /** Entries of many segments of a disk, each chunk read once (inside a transaction: its view). */
  private async entriesAt(disk: Disk, segments: number[]): Promise<Map<number, Entry>> {
    const out = new Map<number, Entry>();
    const read = new Map<number, Buffer>();
    for (const s of segments) {
      const c = Math.floor(s / CHUNK_ENTRIES);
      let data = read.get(c);
      if (!data) read.set(c, (data = await this.store.tables.chunk(disk, c)));
      out.set(s, decodeEntry(data, s - c * CHUNK_ENTRIES));
    }
    return out;
  }

  /** A whole segment was discarded: the entry turns Zero and drops its reference (freed if it was the last). */
  async reclaimSegment(disk: Disk, segment: number): Promise<Entry> {
    return this.store.tables.updateEntry(disk, segment, async (e, put) => {
      if (!isMapped(e)) return e;
      await put(ZERO_ENTRY);
      await releaseUnlessShared(this.store, disk, segment, e);
      if (e.states & STATE_ALTERNATE) {
        const a = await this.store.db.get<{ container_id: number; unit: number }>('SELECT container_id, unit FROM alternates WHERE disk_id = ? AND segment = ?', [disk.id, segment]);
        if (a) await this.store.alloc.free(a.container_id, a.unit, disk.segmentSize / LOCATION_UNIT);
        await this.store.db.run('DELETE FROM alternates WHERE disk_id = ? AND segment = ?', [disk.id, segment]);
      }
      return ZERO_ENTRY;
    });
  }

  /** Records a migration of the disk to a container (resumed after a controller restart); new allocations go there. */
  async startMigration(name: string, to: string): Promise<{ disk: Disk; to: Container }> {
    return this.store.db.transaction(async () => {
      const disk = await this.store.disk(name);
      if (disk.readOnly) throw new VdiskError(`${name} is a snapshot: its segments move with its origin's copies, not on their own`, { code: 'EROFS' });
      const c = (await this.store.listContainers()).find((x) => x.name === to);
      if (!c) throw new VdiskError(`no container named ${to}`, { code: 'ENOENT' });
      if (c.failed) throw new VdiskError(`container ${to} has failed`, { code: 'EIO' });
      await this.store.db.run('INSERT OR REPLACE INTO migrations (disk_id, to_container) VALUES (?, ?)', [disk.id, c.id]);
      await this.store.db.run('UPDATE disks SET container_id = ? WHERE id = ?', [c.id, disk.id]);
      return { disk: { ...disk, containerId: c.id }, to: c };
    });
  }

  async migrations(): Promise<Array<{ diskId: number; to: number }>> {
    return (await this.store.db.all<{ disk_id: number; to_container: number }>('SELECT * FROM migrations')).map((m) => ({ diskId: m.disk_id, to: m.to_container }));
  }

  async finishMigration(diskId: number): Promise<void> {
    await this.store.db.transaction(async () => { await this.store.db.run('DELETE FROM migrations WHERE disk_id = ?', [diskId]); });
  }

  /**
   * Moves one segment of the disk to container `to`: a new segment there receives a copy (between the staged
   * flow's two transactions), then the entry is remapped and the old segment loses this disk's reference, in
   * one commit.
   * Returns the new entry, or null when there was nothing to move.
   */
  async migrateSegment(disk: Disk, segment: number, to: number, copy: (from: Entry, to: Entry, length: number) => Promise<void>): Promise<Entry | null> {
    return this.store.alloc.staged<Entry | null>(disk, segment, async (e, _put, reserve) => {
      if (!isMapped(e) || e.container === to || e.states & STATE_ERROR) return { done: null };
      if (e.states & STATE_ALTERNATE) throw new VdiskError(`${disk.name} segment ${segment} has an alternate location: fold it before moving it`, { code: 'EBUSY' });
      const fresh = await reserve(to);
      return {
        io: () => copy(e, fresh, disk.segmentSize), // the caller made the segment No-write on every agent
        commit: async (_e, put, use) => {
          await use(fresh);
          const entry = { ...fresh, states: e.states & ~STATE_NO_WRITE }; // the copy is this disk's alone
          await put(entry);
          await releaseUnlessShared(this.store, disk, segment, e);
          return entry;
        },
      };
    }, { lazyPlan: true });
  }
}
