// The controller's persistent state: containers, disks, their mapping tables and segment allocation, in
// SQLite. Every mutation is one transaction that has committed (fsync'd) before the returned promise
// resolves, so whatever the controller answers after awaiting it survives a crash. Tables are stored as
// chunks of CHUNK_ENTRIES entries; an absent chunk means "every entry in the disk's fill state", which
// makes creating a thin disk cost the same at 1 GiB and at 1 TiB.
import fs from 'node:fs';
import path from 'node:path';
import { VdiskError } from '../errors.js';
import {
  LOCATION_UNIT, MAX_SEGMENTS, STATE_ALTERNATE, STATE_ERROR, STATE_INVALID, STATE_NO_WRITE, STATE_ZERO, checkSegmentSize, maxDiskSize, type Entry,
} from '../table/mapping-table.js';
import { formatSize } from '../util/size.js';
import { CHUNK_ENTRIES, ENTRY_BYTES, decodeEntry, encodeEntry } from '../table/entry-codec.js';
import { Allocator, runOf, type Run } from './allocator.js';
import { Db } from './db.js';
import { migrate } from './schema.js';
import { Tables, ZERO_ENTRY, checkRange } from './tables.js';
import { eachMapped, isMapped, releaseUnlessShared, sharers } from './sharing.js';
import { COW_MODES, PARTIAL_MODES, type CowMode, type Modes, type PartialMode } from './modes.js';
import { ensureDir } from '../util/dirs.js';
import { dbPath } from './paths.js';
import { checkName } from './names.js';
import { failpoint } from '../util/failpoints.js';
import { LABEL_RESERVED_BYTES } from '../label/container-label.js';
import type { ProgressFn } from './progress.js';

export interface Container {
  id: number; name: string; path: string; size: number; failed: boolean; usedBytes: number;
  /** The UUID in its on-media label; null for a container from before labels (none, data from offset 0). */
  uuid: string | null;
  /** Hosts that reach it by another path than `path`: host id -> path. */
  hostPaths: Record<string, string>;
}
export interface Disk {
  id: number; name: string; size: number; segmentSize: number; segments: number; fillStates: number; containerId: number | null;
  /** Snapshots are read-only; parent is a snapshot's origin or a clone's snapshot (null when gone or none). */
  readOnly: boolean; parent: number | null;
  /** The origin a disk descends from through snapshots and clones: only disks of one family share segments. */
  family: number;
  /** Copy-on-write: the writer gets a new segment (redirect) or the other sharers do (copy-out). */
  cow: CowMode;
  /** Partial writes to a shared segment: blocks to an alternate location (bitmap), or a whole-segment copy. */
  partial: PartialMode;
}
export type { CowMode, Modes, PartialMode } from './modes.js';
export interface DiskInfo extends Disk {
  entriesByState: Record<string, number>;
  allocatedBytes: number;
  perContainer: Record<string, number>;
  /** Entries with an alternate location, and the bytes those alternates hold. */
  alternates: number;
  /** Of allocatedBytes: segments only this disk references, and segments it shares (snapshots, clones). */
  exclusiveBytes: number;
  sharedBytes: number;
  /** Room for new segments of this disk in the containers it may allocate from; 0 means writes to unallocated segments fail with ENOSPC. */
  freeBytes: number;
}

/** Makes bytes [offset, offset + length) of a container read as zeros, durably (SegmentIo.zero). */
export type Zero = (container: number, offset: number, length: number) => Promise<void>;
/** Called with a newly allocated segment before its mapping commits (the controller zeroes it there). */
export type Prepare = (entry: Entry, length: number) => Promise<void>;
export interface Attachment { diskId: number; disk: string; hostId: string; devId: number | null }

interface DiskRow { id: number; name: string; size: number; segment_size: number; fill_states: number; container_id: number | null; read_only: number; parent_id: number | null; cow_mode: string; partial_mode: string; family_id: number | null }
interface ContainerRow { id: number; name: string; path: string; size: number; next_unit: number; failed: number; uuid: string | null }

function toDisk(r: DiskRow): Disk {
  return {
    id: r.id, name: r.name, size: r.size, segmentSize: r.segment_size, segments: Math.ceil(r.size / r.segment_size),
    fillStates: r.fill_states, containerId: r.container_id, readOnly: r.read_only !== 0, parent: r.parent_id,
    cow: r.cow_mode as CowMode, partial: r.partial_mode as PartialMode, family: r.family_id ?? r.id,
  };
}

export class Store {
  readonly alloc: Allocator;
  /** The disks' mapping tables (chunk I/O). */
  readonly tables: Tables;

  private constructor(readonly db: Db, readonly file: string) {
    this.alloc = new Allocator(db);
    this.tables = new Tables(db);
  }

  /** How long a freed segment waits before reuse (see Allocator.quarantineMs). */
  get quarantineMs(): number { return this.alloc.quarantineMs; }
  set quarantineMs(ms: number) { this.alloc.quarantineMs = ms; }

  static async open(dataDir: string): Promise<Store> {
    ensureDir(dataDir);
    const file = dbPath(dataDir);
    const db = await Db.open(file).catch((err: Error) => {
      throw new VdiskError(`cannot open the controller database ${file}: ${err.message}; restore it from a backup (vdisk controller restore FILE)`, { code: 'EDBCORRUPT', cause: err });
    });
    try {
      await checkIntegrity(db, file);
      await migrate(db);
      const store = new Store(db, file);
      // No flow runs yet: every reservation belongs to one a crash interrupted.
      await db.transaction(() => store.alloc.recoverPending());
      return store;
    } catch (err) {
      await db.close().catch(() => {});
      throw err;
    }
  }

  close(): Promise<void> {
    return this.db.close();
  }

  /**
   * A consistent copy of the database in `target` (VACUUM INTO on the read-only connection: it sees one
   * committed state and never blocks the writer). The file must not exist yet.
   */
  async backup(target: string): Promise<{ path: string; bytes: number }> {
    const abs = path.resolve(target);
    if (fs.existsSync(abs)) throw new VdiskError(`${abs} exists already: a backup never overwrites a file`, { code: 'EEXIST' });
    await this.db.get(`VACUUM INTO ${sqlString(abs)}`);
    return { path: abs, bytes: fs.statSync(abs).size };
  }

  // ---- containers

  /**
   * `identity` is what the file or device is (container-identity.ts): one backing store, one container.
   * `uuid` is the label the caller has written (and fdatasync'ed) on it: allocation then starts after the
   * label's reserve. Without one it is a label-less container, allocated from offset 0.
   */
  async addContainer(name: string, filePath: string, size: number, identity: string | null = null,
    o: { uuid?: string; hostPaths?: Record<string, string> } = {}): Promise<Container> {
    checkName('container', name);
    if (!Number.isSafeInteger(size) || size < LOCATION_UNIT) throw new VdiskError(`container size ${size} is below 64 KiB`, { code: 'EINVAL' });
    const uuid = o.uuid ?? null;
    const hostPaths = o.hostPaths ?? {};
    if (uuid !== null && size < LABEL_RESERVED_BYTES + LOCATION_UNIT) {
      throw new VdiskError(`container size ${size} leaves no room after its 1 MiB label`, { code: 'EINVAL' });
    }
    return this.db.transaction(async () => {
      if (await this.db.get('SELECT 1 FROM containers WHERE name = ?', [name])) throw new VdiskError(`container ${name} already exists`, { code: 'EEXIST' });
      const same = identity === null ? undefined : await this.db.get<{ name: string; path: string }>('SELECT name, path FROM containers WHERE identity = ?', [identity]);
      if (same) throw new VdiskError(`${filePath} is the same storage as container ${same.name} (${same.path}): one backing store backs at most one container`, { code: 'EEXIST' });
      // Never a used id again: agents and the controller's fd cache key open containers by id.
      const counter = await this.db.get<{ next: number }>("SELECT next FROM counters WHERE name = 'container'");
      const top = await this.db.get<{ id: number | null }>('SELECT MAX(id) AS id FROM containers');
      const id = Math.max(counter?.next ?? 1, (top?.id ?? 0) + 1);
      await this.db.run("INSERT OR REPLACE INTO counters (name, next) VALUES ('container', ?)", [id + 1]);
      if (uuid !== null && await this.db.get('SELECT 1 FROM containers WHERE uuid = ?', [uuid])) {
        throw new VdiskError(`a container with label ${uuid} exists already`, { code: 'EEXIST' });
      }
      const start = uuid === null ? 0 : LABEL_RESERVED_BYTES / LOCATION_UNIT;
      await this.db.run('INSERT INTO containers (id, name, path, size, identity, uuid, next_unit) VALUES (?, ?, ?, ?, ?, ?, ?)',
        [id, name, filePath, size, identity, uuid, start]);
      // Its intent is done, and so is any a crashed add left for the same storage (its label is overwritten).
      if (uuid !== null) await this.db.run('DELETE FROM label_intents WHERE uuid = ? OR path = ?', [uuid, filePath]);
      for (const [host, p] of Object.entries(hostPaths)) {
        await this.db.run('INSERT INTO container_paths (container_id, host_id, path) VALUES (?, ?, ?)', [id, host, p]);
      }
      return { id, name, path: filePath, size, failed: false, usedBytes: 0, uuid, hostPaths };
    });
  }

  /** Records, durably, that a label with this UUID is about to be written (see schema 7: label_intents). */
  async recordLabelIntent(uuid: string, filePath: string): Promise<void> {
    await this.db.transaction(async () => { await this.db.run('INSERT INTO label_intents (uuid, path) VALUES (?, ?)', [uuid, filePath]); });
  }

  async dropLabelIntent(uuid: string): Promise<void> {
    await this.db.transaction(async () => { await this.db.run('DELETE FROM label_intents WHERE uuid = ?', [uuid]); });
  }

  /** UUIDs of labels this controller began writing for adds that never committed. */
  async labelIntents(): Promise<Set<string>> {
    return new Set((await this.db.all<{ uuid: string }>('SELECT uuid FROM label_intents')).map((r) => r.uuid));
  }

  /** Stored identities by container id (null for containers recorded before identities were). */
  async containerIdentities(): Promise<Map<number, string | null>> {
    const rows = await this.db.all<{ id: number; identity: string | null }>('SELECT id, identity FROM containers');
    return new Map(rows.map((r) => [r.id, r.identity]));
  }

  async setContainerIdentity(id: number, identity: string): Promise<void> {
    await this.db.run('UPDATE containers SET identity = ? WHERE id = ? AND identity IS NULL', [identity, id]);
  }

  async listContainers(): Promise<Container[]> {
    const rows = await this.db.all<ContainerRow & { used: number | null }>(
      'SELECT c.*, (SELECT SUM(units) FROM allocations a WHERE a.container_id = c.id) AS used FROM containers c ORDER BY c.id');
    const paths = await this.db.all<{ container_id: number; host_id: string; path: string }>('SELECT * FROM container_paths ORDER BY host_id');
    return rows.map((r) => ({
      id: r.id, name: r.name, path: r.path, size: r.size, failed: r.failed !== 0, usedBytes: (r.used ?? 0) * LOCATION_UNIT, uuid: r.uuid,
      hostPaths: Object.fromEntries(paths.filter((p) => p.container_id === r.id).map((p) => [p.host_id, p.path])),
    }));
  }

  /** Sets (a path) or clears (null: the host uses the container's own path) per-host paths, in one transaction. */
  async setHostPaths(name: string, changes: Record<string, string | null>): Promise<Container> {
    await this.db.transaction(async () => {
      const c = await this.db.get<ContainerRow>('SELECT * FROM containers WHERE name = ?', [name]);
      if (!c) throw new VdiskError(`no container named ${name}`, { code: 'ENOENT' });
      for (const [host, p] of Object.entries(changes)) {
        if (p === null) await this.db.run('DELETE FROM container_paths WHERE container_id = ? AND host_id = ?', [c.id, host]);
        else await this.db.run('INSERT OR REPLACE INTO container_paths (container_id, host_id, path) VALUES (?, ?, ?)', [c.id, host, p]);
      }
    });
    return this.container(name);
  }

  async container(name: string): Promise<Container> {
    const c = (await this.listContainers()).find((x) => x.name === name);
    if (!c) throw new VdiskError(`no container named ${name}`, { code: 'ENOENT' });
    return c;
  }

  /** Refuses while any segment or disk still uses the container. */
  async removeContainer(name: string): Promise<void> {
    await this.db.transaction(async () => {
      const c = await this.db.get<ContainerRow>('SELECT * FROM containers WHERE name = ?', [name]);
      if (!c) throw new VdiskError(`no container named ${name}`, { code: 'ENOENT' });
      const used = await this.db.get<{ n: number }>('SELECT COUNT(*) AS n FROM allocations WHERE container_id = ?', [c.id]);
      const disks = await this.db.all<{ name: string }>('SELECT name FROM disks WHERE container_id = ?', [c.id]);
      if ((used?.n ?? 0) > 0 || disks.length > 0) {
        throw new VdiskError(`container ${name} is in use (${used?.n ?? 0} segment(s)${disks.length ? `; disks ${disks.map((d) => d.name).join(', ')} prefer it` : ''}): ` +
          'remove or move those disks first', { code: 'EBUSY' });
      }
      await this.db.run('DELETE FROM free_extents WHERE container_id = ?', [c.id]);
      await this.db.run('DELETE FROM container_paths WHERE container_id = ?', [c.id]);
      await this.db.run('DELETE FROM containers WHERE id = ?', [c.id]);
    });
  }

  /** Marks a container failed and turns every entry mapped to it to Error; returns the disks touched. */
  async failContainer(name: string): Promise<Map<number, number[]>> {
    return this.db.transaction(async () => {
      const c = await this.db.get<ContainerRow>('SELECT * FROM containers WHERE name = ?', [name]);
      if (!c) throw new VdiskError(`no container named ${name}`, { code: 'ENOENT' });
      await this.db.run('UPDATE containers SET failed = 1 WHERE id = ?', [c.id]);
      const touched = new Map<number, number[]>();
      // Entries whose alternate location is there fail too: some of their blocks live only there.
      const altIn = new Set((await this.db.all<{ disk_id: number; segment: number }>('SELECT disk_id, segment FROM alternates WHERE container_id = ?', [c.id]))
        .map((a) => `${a.disk_id}/${a.segment}`));
      // Disk by disk, chunk by chunk: never every table in memory at once.
      for (const d of await this.listDisks()) for await (const { chunk, data } of this.tables.chunks(d)) {
        const row = { disk_id: d.id, chunk, data };
        let changed = false;
        for (let k = 0; k < row.data.length / ENTRY_BYTES; k++) {
          const e = decodeEntry(row.data, k);
          const i = row.chunk * CHUNK_ENTRIES + k;
          if ((e.container !== c.id && !altIn.has(`${row.disk_id}/${i}`)) || (e.states & (STATE_ZERO | STATE_ERROR | 1)) !== 0) continue;
          encodeEntry(row.data, k, { ...e, states: e.states | STATE_ERROR });
          const list = touched.get(row.disk_id) ?? [];
          list.push(i);
          touched.set(row.disk_id, list);
          changed = true;
        }
        if (changed) await this.tables.putChunk(row.disk_id, row.chunk, row.data);
      }
      return touched;
    });
  }

  // ---- disks

  async createDisk(o: { name: string; size: number; segmentSize: number; container?: string; thick?: boolean; zero?: Zero } & Modes): Promise<Disk> {
    checkName('disk', o.name);
    checkModes(o);
    try {
      checkSegmentSize(o.segmentSize);
    } catch (err) {
      throw new VdiskError((err as Error).message, { code: 'EINVAL' });
    }
    if (!Number.isSafeInteger(o.size) || o.size <= 0 || o.size % 512 !== 0) throw new VdiskError(`disk size ${o.size} is not a positive multiple of 512`, { code: 'EINVAL' });
    if (o.size > maxDiskSize(o.segmentSize)) {
      throw new VdiskError(`disk size ${formatSize(o.size)} is over the limit of ${formatSize(maxDiskSize(o.segmentSize))} for ${formatSize(o.segmentSize)} segments ` +
        `(${MAX_SEGMENTS} segments per disk): use a larger segment size`, { code: 'EFBIG' });
    }
    const exists = async () => {
      if (await this.db.get('SELECT 1 FROM disks WHERE name = ?', [o.name])) throw new VdiskError(`disk ${o.name} already exists`, { code: 'EEXIST' });
      if (o.container === undefined) return null;
      const c = await this.db.get<ContainerRow>('SELECT * FROM containers WHERE name = ?', [o.container]);
      if (!c) throw new VdiskError(`no container named ${o.container}`, { code: 'ENOENT' });
      return c.id;
    };
    const insert = async (containerId: number | null): Promise<Disk> => {
      const { lastID } = await this.db.run('INSERT INTO disks (name, size, segment_size, fill_states, container_id, cow_mode, partial_mode) VALUES (?, ?, ?, ?, ?, ?, ?)',
        [o.name, o.size, o.segmentSize, STATE_ZERO, containerId, o.cow ?? 'redirect', o.partial ?? 'bitmap']);
      return {
        id: lastID, name: o.name, size: o.size, segmentSize: o.segmentSize, segments: Math.ceil(o.size / o.segmentSize),
        fillStates: STATE_ZERO, containerId, readOnly: false, parent: null, cow: o.cow ?? 'redirect', partial: o.partial ?? 'bitmap', family: lastID,
      };
    };
    if (!o.thick) return this.db.transaction(async () => insert(await exists()));
    const zero = o.zero;
    if (!zero) throw new VdiskError('a thick disk needs a way to zero its segments', { code: 'EINVAL' });
    // Reserve, zero outside any transaction, then create the disk naming them: a thick disk maps storage
    // that may hold a removed disk's data (reused extents, or a container that was never blank), and no
    // disk reads bytes that were not zeroed for it. One run from a bump pointer when a container has room
    // for all of it (one fallocate for the lot), else segment by segment wherever there is room.
    const segments = Math.ceil(o.size / o.segmentSize);
    const units = o.segmentSize / LOCATION_UNIT;
    const runs = await this.db.transaction(async () => {
      const only = await exists();
      const run = await this.alloc.run(units, segments, only, true);
      if (run) return [run];
      const list: Run[] = [];
      for (let i = 0; i < segments; i++) list.push(runOf(await this.alloc.segment(units, only, true, `${o.segmentSize}-byte segment`), units));
      return list;
    });
    failpoint('thick.reserved');
    try {
      for (const r of coalesce(runs)) await zero(r.container, r.unit * LOCATION_UNIT, r.count * r.units * LOCATION_UNIT);
      failpoint('thick.zeroed');
      return await this.db.transaction(async () => {
        const disk = await insert(await exists());
        // The reserved segments in order: segment i of the disk is the i-th of them.
        let ri = 0;
        let rk = 0;
        for (let first = 0; first < segments; first += CHUNK_ENTRIES) {
          const count = Math.min(CHUNK_ENTRIES, segments - first);
          const data = Buffer.alloc(count * ENTRY_BYTES);
          for (let k = 0; k < count; k++) {
            const r = runs[ri];
            encodeEntry(data, k, { states: 0, container: r.container, offset: (r.unit + rk * r.units) * LOCATION_UNIT, alt: 0 });
            if (++rk === r.count) { ri++; rk = 0; }
          }
          await this.db.run('INSERT INTO table_chunks (disk_id, chunk, data) VALUES (?, ?, ?)', [disk.id, first / CHUNK_ENTRIES, data]);
        }
        for (const r of runs) await this.alloc.claim(r);
        return disk;
      });
    } catch (err) {
      await this.db.transaction(async () => { for (const r of runs) await this.alloc.unreserve(r); });
      throw err;
    }
  }

  async listDisks(): Promise<Disk[]> {
    return (await this.db.all<DiskRow>('SELECT * FROM disks ORDER BY id')).map(toDisk);
  }

  async disk(name: string): Promise<Disk> {
    const row = await this.db.get<DiskRow>('SELECT * FROM disks WHERE name = ?', [name]);
    if (!row) throw new VdiskError(`no disk named ${name}`, { code: 'ENOENT' });
    return toDisk(row);
  }

  /** Drops the disk's references; segments no other disk of its family names go back to the free pool. */
  async removeDisk(name: string, progress?: ProgressFn): Promise<void> {
    await this.db.transaction(async () => {
      const disk = await this.disk(name);
      const attached = await this.db.all<{ host_id: string }>('SELECT host_id FROM attachments WHERE disk_id = ?', [disk.id]);
      if (attached.length) throw new VdiskError(`disk ${name} is attached on ${attached.map((a) => a.host_id).join(', ')}: detach it first`, { code: 'EBUSY' });
      await eachMapped(this, disk, async (data, k, _i, shared) => {
        if (!shared) await this.free(data.readUInt32LE(k * ENTRY_BYTES + 4) >>> 8, data.readUInt32LE(k * ENTRY_BYTES + 8), disk.segmentSize / LOCATION_UNIT);
      }, progress);
      for (const a of await this.db.all<{ container_id: number; unit: number }>('SELECT container_id, unit FROM alternates WHERE disk_id = ?', [disk.id])) {
        await this.free(a.container_id, a.unit, disk.segmentSize / LOCATION_UNIT); // alternates are never shared
      }
      await this.db.run('DELETE FROM alternates WHERE disk_id = ?', [disk.id]);
      await this.db.run('DELETE FROM table_chunks WHERE disk_id = ?', [disk.id]);
      await this.db.run('UPDATE disks SET parent_id = NULL WHERE parent_id = ?', [disk.id]);
      await this.db.run('DELETE FROM disks WHERE id = ?', [disk.id]);
    });
    failpoint('rm.committed');
  }

  // ---- snapshots and clones

  /**
   * A read-only copy of the disk's table that shares every segment: No-write on each mapped entry of both,
   * one more reference per segment. One transaction; its cost grows with the table, not with the data.
   * The caller has already made every agent stop writing to the disk (No-write with the blocking flag).
   */
  async snapshot(diskName: string, snapName: string): Promise<Disk> {
    checkName('snapshot', snapName);
    return this.db.transaction(async () => {
      const from = await this.disk(diskName);
      return this.share(from, snapName, true);
    });
  }

  /** A writable disk sharing every segment of a snapshot; writes copy on write. */
  async clone(snapName: string, name: string, modes: Modes = {}): Promise<Disk> {
    checkName('disk', name);
    checkModes(modes);
    return this.db.transaction(async () => {
      const from = await this.disk(snapName);
      if (!from.readOnly) throw new VdiskError(`${snapName} is not a snapshot: clone a snapshot of it (vdisk snapshot ${snapName} SNAP)`, { code: 'EINVAL' });
      return this.share(from, name, false, modes);
    });
  }

  private async share(from: Disk, name: string, readOnly: boolean, modes: Modes = {}): Promise<Disk> {
    if (await this.db.get('SELECT 1 FROM disks WHERE name = ?', [name])) throw new VdiskError(`disk ${name} already exists`, { code: 'EEXIST' });
    // Alternates are per disk: the caller folds them first (a shared table must name only whole segments).
    const alts = await this.db.get<{ n: number }>('SELECT COUNT(*) AS n FROM alternates WHERE disk_id = ?', [from.id]);
    if ((alts?.n ?? 0) > 0) throw new VdiskError(`${from.name} has ${alts?.n} alternate location(s): fold them before sharing`, { code: 'EBUSY' });
    const { lastID } = await this.db.run(
      'INSERT INTO disks (name, size, segment_size, fill_states, container_id, read_only, parent_id, cow_mode, partial_mode, family_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
      [name, from.size, from.segmentSize, from.fillStates, from.containerId, readOnly ? 1 : 0, from.id, modes.cow ?? from.cow, modes.partial ?? from.partial, from.family]);
    // No-write on every mapped entry of the origin, set on the stored bytes (no decoding: a million entries
    // take milliseconds); the copy carries it too. Nothing is counted per segment (see sharing.ts).
    for await (const r of this.tables.chunks(from)) {
      let changed = false;
      for (let o = 4; o < r.data.length; o += ENTRY_BYTES) {
        const s = r.data[o];
        if ((s & (STATE_INVALID | STATE_ZERO)) !== 0 || (s & STATE_NO_WRITE) !== 0) continue;
        r.data[o] = s | STATE_NO_WRITE;
        changed = true;
      }
      if (changed) await this.tables.putChunk(from.id, r.chunk, r.data);
    }
    await this.db.run('INSERT INTO table_chunks (disk_id, chunk, data) SELECT ?, chunk, data FROM table_chunks WHERE disk_id = ?', [lastID, from.id]);
    return toDisk((await this.db.get<DiskRow>('SELECT * FROM disks WHERE id = ?', [lastID]))!);
  }

  /**
   * A write reached a No-write entry. If its segment is still shared, the disk gets a new segment holding a
   * copy (redirect: `copy` runs inside the transaction, before the remap commits) and drops its reference to
   * the old one; if nobody else references it any more, No-write is simply cleared.
   */
  async copyOnWrite(disk: Disk, segment: number, copy: (from: Entry, to: Entry, length: number) => Promise<void>): Promise<{ entry: Entry; remapped: boolean }> {
    return this.staged<{ entry: Entry; remapped: boolean }>(disk, segment, async (e, put, reserve) => {
      if (!isMapped(e) || !(e.states & STATE_NO_WRITE)) return { done: { entry: e, remapped: false } };
      if (disk.readOnly) throw new VdiskError(`${disk.name} is a read-only snapshot`, { code: 'EROFS' });
      if ((await sharers(this, disk, segment, e)).length === 0) {
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
          await releaseUnlessShared(this, disk, segment, e);
          return { entry, remapped: true };
        },
      };
    });
  }

  /** A whole segment was discarded: the entry turns Zero and drops its reference (freed if it was the last). */
  async reclaimSegment(disk: Disk, segment: number): Promise<Entry> {
    return this.tables.updateEntry(disk, segment, async (e, put) => {
      if (!isMapped(e)) return e;
      await put(ZERO_ENTRY);
      await releaseUnlessShared(this, disk, segment, e);
      if (e.states & STATE_ALTERNATE) {
        const a = await this.db.get<{ container_id: number; unit: number }>('SELECT container_id, unit FROM alternates WHERE disk_id = ? AND segment = ?', [disk.id, segment]);
        if (a) await this.free(a.container_id, a.unit, disk.segmentSize / LOCATION_UNIT);
        await this.db.run('DELETE FROM alternates WHERE disk_id = ? AND segment = ?', [disk.id, segment]);
      }
      return ZERO_ENTRY;
    });
  }

  // ---- migration

  /** Records a migration of the disk to a container (resumed after a controller restart); new allocations go there. */
  async startMigration(name: string, to: string): Promise<{ disk: Disk; to: Container }> {
    return this.db.transaction(async () => {
      const disk = await this.disk(name);
      if (disk.readOnly) throw new VdiskError(`${name} is a snapshot: its segments move with its origin's copies, not on their own`, { code: 'EROFS' });
      const c = (await this.listContainers()).find((x) => x.name === to);
      if (!c) throw new VdiskError(`no container named ${to}`, { code: 'ENOENT' });
      if (c.failed) throw new VdiskError(`container ${to} has failed`, { code: 'EIO' });
      await this.db.run('INSERT OR REPLACE INTO migrations (disk_id, to_container) VALUES (?, ?)', [disk.id, c.id]);
      await this.db.run('UPDATE disks SET container_id = ? WHERE id = ?', [c.id, disk.id]);
      return { disk: { ...disk, containerId: c.id }, to: c };
    });
  }

  async migrations(): Promise<Array<{ diskId: number; to: number }>> {
    return (await this.db.all<{ disk_id: number; to_container: number }>('SELECT * FROM migrations')).map((m) => ({ diskId: m.disk_id, to: m.to_container }));
  }

  async finishMigration(diskId: number): Promise<void> {
    await this.db.transaction(async () => { await this.db.run('DELETE FROM migrations WHERE disk_id = ?', [diskId]); });
  }

  /**
   * Moves one segment of the disk to container `to`: a new segment there receives a copy (inside the
   * transaction), the entry is remapped and the old segment loses this disk's reference, all in one commit.
   * Returns the new entry, or null when there was nothing to move.
   */
  async migrateSegment(disk: Disk, segment: number, to: number, copy: (from: Entry, to: Entry, length: number) => Promise<void>): Promise<Entry | null> {
    return this.staged<Entry | null>(disk, segment, async (e, _put, reserve) => {
      if (!isMapped(e) || e.container === to || e.states & STATE_ERROR) return { done: null };
      if (e.states & STATE_ALTERNATE) throw new VdiskError(`${disk.name} segment ${segment} has an alternate location: fold it before moving it`, { code: 'EBUSY' });
      const fresh = await reserve(to);
      return {
        io: () => copy(e, fresh, disk.segmentSize), // the caller made the segment No-write on every agent
        commit: async (_e, put, use) => {
          await use(fresh);
          const entry = { ...fresh, states: e.states & ~STATE_NO_WRITE }; // the copy is this disk's alone
          await put(entry);
          await releaseUnlessShared(this, disk, segment, e);
          return entry;
        },
      };
    }, { lazyPlan: true });
  }

  /**
   * Thin provisioning: gives Zero segment `segment` of the disk its own storage and returns the new entry.
   * Idempotent: if the segment was allocated meanwhile (two faults racing), the existing entry is returned.
   */
  async allocateSegment(disk: Disk, segment: number, prepare?: Prepare): Promise<Entry> {
    return this.staged<Entry>(disk, segment, async (current, _put, reserve) => {
      if ((current.states & STATE_ZERO) === 0) return { done: current };
      const entry = await reserve();
      return {
        // Before the mapping commits: a crash before the segment reads as zeros leaves it unmapped.
        io: async () => { if (prepare) await prepare(entry, disk.segmentSize); },
        commit: async (_e, put, use) => {
          await use(entry);
          await put(entry);
          return entry;
        },
      };
    }, { lazyPlan: true });
  }

  /**
   * allocateSegment for many Zero segments of one disk at once (group commit): one transaction reserves a
   * segment for each, `zero` zeroes them all (outside any transaction, durably), one transaction maps every
   * one whose entry is still Zero. Returns the new entries by segment; a segment that was not Zero (at plan
   * or at commit) is absent and its reservation goes back. ENOSPC reserves nothing (the caller goes one by one).
   */
  async allocateSegments(disk: Disk, segments: number[], zero: (locs: Entry[], length: number) => Promise<void>): Promise<Map<number, Entry>> {
    const units = disk.segmentSize / LOCATION_UNIT;
    for (const s of segments) checkRange(disk, s, 1);
    const unique = [...new Set(segments)].sort((x, y) => x - y);
    // The entries, one read per chunk (inside the caller's transaction: its view).
    const entriesOf = async (list: number[]): Promise<Map<number, Entry>> => {
      const out = new Map<number, Entry>();
      let chunk = -1;
      let data: Buffer = Buffer.alloc(0);
      for (const s of list) {
        const c = Math.floor(s / CHUNK_ENTRIES);
        if (c !== chunk) data = await this.tables.chunk(disk, (chunk = c));
        out.set(s, decodeEntry(data, s - c * CHUNK_ENTRIES));
      }
      return out;
    };
    const planned = await this.db.transaction(async () => {
      const now = await entriesOf(unique);
      const zeroes = unique.filter((s) => now.get(s)!.states === STATE_ZERO);
      if (zeroes.length === 0) return [];
      // One run above a bump pointer when the preferred container (or any) has room: three statements for
      // the lot; else segment by segment, reused extents included.
      const pref = (await this.db.get<{ container_id: number | null }>('SELECT container_id FROM disks WHERE id = ?', [disk.id]))?.container_id ?? null;
      const run = await this.alloc.run(units, zeroes.length, pref, true);
      if (run) return zeroes.map((segment, i) => ({ segment, loc: { states: 0, container: run.container, offset: (run.unit + i * units) * LOCATION_UNIT, alt: 0 } }));
      const out: Array<{ segment: number; loc: Entry }> = [];
      for (const segment of zeroes) out.push({ segment, loc: await this.allocateUnits(disk, undefined, true) });
      return out;
    }, { durable: false }); // reservations only: the mapping commit below is durable and covers them
    const giveBack = (list: Array<{ loc: Entry }>) => this.db.transaction(async () => {
      for (const p of list) await this.alloc.unreserve(runOf(p.loc, units));
    });
    failpoint('batch.planned');
    try {
      // Before the mappings commit: a crash before the segments read as zeros leaves them unmapped.
      if (planned.length) await zero(planned.map((p) => p.loc), disk.segmentSize);
    } catch (err) {
      await giveBack(planned);
      throw err;
    }
    failpoint('batch.zeroed');
    const mappedAll = await this.db.transaction(async () => {
      const now = await entriesOf(planned.map((p) => p.segment));
      const mapped = new Map<number, Entry>();
      for (const p of planned) {
        if (now.get(p.segment)!.states !== STATE_ZERO) await this.alloc.unreserve(runOf(p.loc, units)); // changed meanwhile
        else mapped.set(p.segment, p.loc);
      }
      for (const r of coalesce([...mapped.values()].map((e) => runOf(e, units)))) await this.alloc.claim(r);
      // One rewrite per chunk, however many of its entries changed.
      const byChunk = new Map<number, Array<[number, Entry]>>();
      for (const [segment, e] of mapped) {
        const c = Math.floor(segment / CHUNK_ENTRIES);
        const list = byChunk.get(c) ?? [];
        list.push([segment, e]);
        byChunk.set(c, list);
      }
      for (const [c, list] of byChunk) {
        const data = await this.tables.chunk(disk, c);
        for (const [segment, e] of list) encodeEntry(data, segment - c * CHUNK_ENTRIES, e);
        await this.tables.putChunk(disk.id, c, data);
      }
      return mapped;
    });
    failpoint('batch.committed');
    return mappedAll;
  }

  async diskInfo(name: string): Promise<DiskInfo> {
    const disk = await this.disk(name);
    const byState: Record<string, number> = { mapped: 0, zero: 0, invalid: 0, error: 0, noWrite: 0 };
    const perContainer = new Map<number, number>();
    const tally = (e: Entry, n: number) => {
      if (e.states & STATE_INVALID) byState.invalid += n;
      else if (e.states & STATE_ZERO) byState.zero += n;
      else {
        if (e.states & STATE_ERROR) byState.error += n;
        else byState.mapped += n;
        if (e.states & STATE_NO_WRITE) byState.noWrite += n;
        perContainer.set(e.container, (perContainer.get(e.container) ?? 0) + n * disk.segmentSize);
      }
    };
    let sharedBytes = 0;
    await eachMapped(this, disk, (_data, _k, _i, shared) => { if (shared) sharedBytes += disk.segmentSize; });
    // What the table holds, chunk by chunk (an absent chunk is its fill state, counted at once): the cost
    // follows the stored entries, not the disk's size, and each chunk is one turn of the event loop.
    let stored = 0;
    for await (const { data } of this.tables.chunks(disk)) {
      const n = data.length / ENTRY_BYTES;
      for (let k = 0; k < n; k++) tally(decodeEntry(data, k), 1);
      stored += n;
    }
    tally({ ...ZERO_ENTRY, states: disk.fillStates }, disk.segments - stored);
    const alts = await this.db.all<{ container_id: number }>('SELECT container_id FROM alternates WHERE disk_id = ?', [disk.id]);
    for (const a of alts) perContainer.set(a.container_id, (perContainer.get(a.container_id) ?? 0) + disk.segmentSize);
    const names = new Map((await this.listContainers()).map((c) => [c.id, c.name]));
    const per: Record<string, number> = {};
    let allocated = 0;
    for (const [id, bytes] of perContainer) {
      per[names.get(id) ?? `#${id}`] = bytes;
      allocated += bytes;
    }
    return {
      ...disk, entriesByState: byState, allocatedBytes: allocated, perContainer: per, alternates: alts.length,
      exclusiveBytes: allocated - sharedBytes, sharedBytes, freeBytes: await this.freeFor(disk),
    };
  }

  /** Bytes of new segments the disk could still get: free extents of its size plus room above each bump pointer. */
  private async freeFor(disk: Disk): Promise<number> {
    const units = disk.segmentSize / LOCATION_UNIT;
    const cs = await this.db.all<ContainerRow & { free: number }>(
      'SELECT c.*, (SELECT COUNT(*) FROM free_extents f WHERE f.container_id = c.id AND f.units = ?) AS free FROM containers c WHERE failed = 0', [units]);
    let segments = 0;
    for (const c of cs) {
      if (disk.containerId !== null && c.id !== disk.containerId) continue;
      const next = Math.ceil(c.next_unit / units) * units;
      segments += c.free + Math.max(0, Math.floor((c.size / LOCATION_UNIT - next) / units));
    }
    return segments * disk.segmentSize;
  }

  async containerById(id: number): Promise<Container | undefined> {
    return (await this.listContainers()).find((c) => c.id === id);
  }

  async diskById(id: number): Promise<Disk | undefined> {
    const row = await this.db.get<DiskRow>('SELECT * FROM disks WHERE id = ?', [id]);
    return row ? toDisk(row) : undefined;
  }

  // ---- agents and attachments

  async touchAgent(hostId: string, leaseMs: number): Promise<void> {
    await this.db.transaction(async () => {
      await this.db.run(`INSERT INTO agents (host_id, last_seen, lease_ms) VALUES (?, strftime('%Y-%m-%dT%H:%M:%fZ'), ?)
        ON CONFLICT (host_id) DO UPDATE SET last_seen = excluded.last_seen, lease_ms = excluded.lease_ms`, [hostId, leaseMs]);
    });
  }

  /** The last lease each known agent registered with. */
  async agentLeases(): Promise<Map<string, number>> {
    const rows = await this.db.all<{ host_id: string; lease_ms: number | null }>('SELECT host_id, lease_ms FROM agents');
    return new Map(rows.filter((r) => r.lease_ms !== null).map((r) => [r.host_id, r.lease_ms as number]));
  }

  async attachments(filter: { hostId?: string; diskId?: number } = {}): Promise<Attachment[]> {
    const rows = await this.db.all<{ disk_id: number; name: string; host_id: string; dev_id: number | null }>(
      `SELECT a.disk_id, d.name, a.host_id, a.dev_id FROM attachments a JOIN disks d ON d.id = a.disk_id
       WHERE (? IS NULL OR a.host_id = ?) AND (? IS NULL OR a.disk_id = ?) ORDER BY d.name, a.host_id`,
      [filter.hostId ?? null, filter.hostId ?? null, filter.diskId ?? null, filter.diskId ?? null]);
    return rows.map((r) => ({ diskId: r.disk_id, disk: r.name, hostId: r.host_id, devId: r.dev_id }));
  }

  /** Records (durably) that hostId serves the disk, before the device exists: a crash then leaves a record to redo. */
  async putAttachment(diskId: number, hostId: string, devId: number | null): Promise<void> {
    await this.db.transaction(async () => {
      await this.db.run('INSERT OR IGNORE INTO agents (host_id) VALUES (?)', [hostId]);
      await this.db.run('INSERT OR REPLACE INTO attachments (disk_id, host_id, dev_id) VALUES (?, ?, ?)', [diskId, hostId, devId]);
    });
  }

  async removeAttachment(diskId: number, hostId: string): Promise<void> {
    await this.db.transaction(async () => {
      await this.db.run('DELETE FROM attachments WHERE disk_id = ? AND host_id = ?', [diskId, hostId]);
    });
  }

  // ---- allocation internals (callers hold a transaction)

  /**
   * One segment of the disk's size, aligned to it: a freed one first, else from the bump pointer. `pending`
   * reserves it for a staged flow (see staged()); otherwise the caller's transaction names it.
   */
  async allocateUnits(disk: Disk, pinned?: number | null, pending = false): Promise<Entry> {
    // The preference is read here, inside the caller's transaction, not taken from `disk`: callers hold Disk
    // objects from before a migration changed it, and a segment allocated on the old container after the
    // migration's scan passed it would stay behind.
    const only = pinned !== undefined ? pinned
      : await this.db.get<{ container_id: number | null }>('SELECT container_id FROM disks WHERE id = ?', [disk.id])
        .then((r) => (r ? r.container_id : disk.containerId));
    return this.alloc.segment(disk.segmentSize / LOCATION_UNIT, only, pending, `${disk.segmentSize}-byte segment`);
  }

  /** Returns a segment to the free pool, quarantined (see Allocator.free); the caller knows nobody names it. */
  async free(containerId: number, unit: number, units: number): Promise<void> {
    await this.alloc.free(containerId, unit, units);
  }

  /**
   * A change of entry `segment` that needs file I/O (zeroing or copying into a new segment) between choosing
   * the segment and committing the mapping that names it, without holding a transaction across the I/O
   * (every other write would wait for it). plan() runs in a transaction: it sees the entry, may put() it
   * and finish ({ done }), or reserve segments and return the I/O and the commit. io() runs outside any
   * transaction; nobody can read a reserved segment, since no table names it. commit() runs in a second
   * transaction only if the entry is still the planned one (else everything starts over); it names the
   * reserved segments it keeps with use(), and the others go back. A failure returns every reservation.
   */
  async staged<T>(disk: Disk, segment: number, plan: Plan<T>, o: { lazyPlan?: boolean } = {}): Promise<T> {
    const units = disk.segmentSize / LOCATION_UNIT;
    for (let attempt = 1; ; attempt++) {
      const reserved: Run[] = [];
      let planned: Entry | undefined;
      // lazyPlan: the plan only reserves (it never puts), so it commits without its own fsync: a crash may
      // undo a reservation nobody names yet, and the durable commit that maps it covers it.
      const step = await this.tables.updateEntry(disk, segment, (e, put) => {
        planned = e;
        const putGuarded = o.lazyPlan ? () => { throw new VdiskError('a lazy plan must not change the entry', { code: 'EINVAL' }); } : put;
        return plan(e, putGuarded, async (pinned) => {
          const loc = await this.allocateUnits(disk, pinned, true);
          reserved.push(runOf(loc, units));
          return loc;
        });
      }, { durable: !o.lazyPlan });
      if ('done' in step) return step.done;
      failpoint('staged.planned');
      let result: T | typeof RETRY;
      try {
        await step.io();
        failpoint('staged.io');
        result = await this.tables.updateEntry(disk, segment, async (e, put) => {
          if (!sameEntry(e, planned!)) return RETRY;
          const r = await step.commit(e, put, async (loc) => {
            const i = reserved.findIndex((x) => x.container === loc.container && x.unit * LOCATION_UNIT === loc.offset);
            if (i < 0) throw new VdiskError(`segment ${loc.container}/${loc.offset} was not reserved by this flow`, { code: 'EINVAL' });
            await this.alloc.claim(reserved[i]);
            reserved.splice(i, 1);
          });
          if (r !== RETRY) for (const x of reserved.splice(0)) await this.alloc.unreserve(x);
          return r;
        });
      } catch (err) {
        await this.db.transaction(async () => { for (const x of reserved) await this.alloc.unreserve(x); });
        throw err;
      }
      if (result !== RETRY) {
        failpoint('staged.committed');
        return result;
      }
      await this.db.transaction(async () => { for (const x of reserved) await this.alloc.unreserve(x); });
      if (attempt >= 8) throw new VdiskError(`${disk.name} segment ${segment} keeps changing under a copy: try again`, { code: 'EAGAIN' });
    }
  }
}

/**
 * A damaged database is refused at start, never served: a truncated or corrupted file could map a disk's
 * segments anywhere. quick_check reads every page (a second or so for a pool of a million segments).
 */
export async function checkIntegrity(db: Db, file: string): Promise<void> {
  let rows: Array<{ quick_check: string }>;
  try {
    rows = await db.all<{ quick_check: string }>('PRAGMA quick_check');
  } catch (err) {
    throw new VdiskError(`the controller database ${file} is damaged (${(err as Error).message}): restore it from a backup (vdisk controller restore FILE)`, { code: 'EDBCORRUPT', cause: err });
  }
  if (rows.length !== 1 || rows[0].quick_check !== 'ok') {
    throw new VdiskError(`the controller database ${file} is damaged (${rows.map((r) => r.quick_check.replace(/\s+/g, ' ')).slice(0, 3).join('; ')}): restore it from a backup (vdisk controller restore FILE)`, { code: 'EDBCORRUPT' });
  }
}

function sqlString(s: string): string {
  return `'${s.replace(/'/g, "''")}'`;
}

/** A staged flow's answer to "start over": the entry changed between its two transactions. */
export const RETRY: unique symbol = Symbol('retry');
export interface Stage<T> {
  io: () => Promise<void>;
  commit: (e: Entry, put: (e: Entry) => Promise<void>, use: (loc: Entry) => Promise<void>) => Promise<T | typeof RETRY>;
}
export type Plan<T> = (e: Entry, put: (e: Entry) => Promise<void>, reserve: (pinned?: number | null) => Promise<Entry>) => Promise<{ done: T } | Stage<T>>;

/** Adjacent single segments of one container as one run, so zeroing them takes one call. */
function coalesce(runs: Run[]): Run[] {
  const out: Run[] = [];
  for (const r of runs) {
    const last = out[out.length - 1];
    if (last && last.container === r.container && last.units === r.units && last.unit + last.count * last.units === r.unit) last.count += r.count;
    else out.push({ ...r });
  }
  return out;
}

function sameEntry(a: Entry, b: Entry): boolean {
  return a.states === b.states && a.container === b.container && a.offset === b.offset && a.alt === b.alt;
}

export { isMapped } from './sharing.js';

function checkModes(m: Modes): void {
  if (m.cow !== undefined && !COW_MODES.includes(m.cow)) throw new VdiskError(`--cow must be ${COW_MODES.join(' or ')}, not ${String(m.cow)}`, { code: 'EINVAL' });
  if (m.partial !== undefined && !PARTIAL_MODES.includes(m.partial)) throw new VdiskError(`--partial must be ${PARTIAL_MODES.join(' or ')}, not ${String(m.partial)}`, { code: 'EINVAL' });
}

