// The controller's persistent state, in SQLite: containers, disks, agents and attachments here, and as parts
// a Store owns, the disks' tables (tables.ts), their segments (segment-alloc.ts) and the sharing of segments
// between disks (cow.ts). Every mutation is one transaction that has committed (fsync'd) before the returned
// promise resolves, so whatever the controller answers after awaiting it survives a crash.
import fs from 'node:fs';
import path from 'node:path';
import { VdiskError } from '../errors.js';
import { AHEAD_MAX_BYTES } from './alloc-ahead.js';
import {
  LOCATION_UNIT, MAX_SEGMENTS, STATE_ERROR, STATE_INVALID, STATE_NO_WRITE, STATE_ZERO, checkSegmentSize, maxDiskSize, type Entry,
} from '../table/mapping-table.js';
import { formatSize } from '../util/size.js';
import { CHUNK_ENTRIES, ENTRY_BYTES, decodeEntry, encodeEntry } from '../table/entry-codec.js';
import { SegmentAlloc, type Zero } from './segment-alloc.js';
import { Db } from './db.js';
import { TableCache } from './table-cache.js';
import { migrate } from './schema.js';
import { Tables, ZERO_ENTRY } from './tables.js';
import { eachMapped } from './sharing.js';
import { checkModes, type CowMode, type Modes, type PartialMode } from './modes.js';
import { CowOps } from './cow.js';
import { ensureDir } from '../util/dirs.js';
import { dbPath } from './paths.js';
import { checkName } from './names.js';
import { failpoint } from '../util/failpoints.js';
import { LABEL_RESERVED_BYTES } from '../label/container-label.js';
import type { ProgressFn } from './progress.js';
import { freeGrants } from './grants.js';

export interface Container {
  /** usedBytes: allocated to segments (grants apart); grantedBytes: granted to a holder, not yet claimed (grants.ts). */
  id: number; name: string; path: string; size: number; failed: boolean; usedBytes: number; grantedBytes: number;
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
  /** The disks' mapping tables (chunk I/O). */
  readonly tables: Tables;
  /** Storage for disks' entries: thin and thick allocation, staged flows, freeing. */
  readonly alloc: SegmentAlloc;
  /** Snapshots, clones, copy-on-write, reclaim and migration steps. */
  readonly cow: CowOps;

  /** diskById's rows. */
  private readonly diskCache: TableCache<number, Disk | undefined>;
  /** A disk's holders (the query reads both tables). */
  private readonly holderCache: TableCache<number, Attachment[]>;

  private constructor(readonly db: Db, readonly file: string) {
    this.tables = new Tables(db);
    this.alloc = new SegmentAlloc(db, this.tables);
    this.cow = new CowOps(this);
    this.diskCache = new TableCache(db, ['disks'], (d) => (d ? { ...d } : d));
    this.holderCache = new TableCache(db, ['attachments', 'disks'], (rows) => rows.map((a) => ({ ...a })));
  }

  /** The most a sequential writer gets mapped ahead of its writes (alloc-ahead.ts); 0: nothing ahead. */
  allocAheadBytes = AHEAD_MAX_BYTES;
  /** How long a freed segment waits before reuse (see Allocator.quarantineMs). */
  get quarantineMs(): number { return this.alloc.pool.quarantineMs; }
  set quarantineMs(ms: number) { this.alloc.pool.quarantineMs = ms; }

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
      await db.transaction(() => store.alloc.pool.recoverPending());
      await db.transaction(() => store.alloc.pool.forgetZeroed());
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
      return { id, name, path: filePath, size, failed: false, usedBytes: 0, grantedBytes: 0, uuid, hostPaths };
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
    const rows = await this.db.all<ContainerRow & { used: number | null; granted: number | null }>(
      `SELECT c.*, (SELECT SUM(units) FROM allocations a WHERE a.container_id = c.id) AS used,
        (SELECT SUM(units) FROM grants g WHERE g.container_id = c.id) AS granted FROM containers c ORDER BY c.id`);
    const paths = await this.db.all<{ container_id: number; host_id: string; path: string }>('SELECT * FROM container_paths ORDER BY host_id');
    return rows.map((r) => ({
      id: r.id, name: r.name, path: r.path, size: r.size, failed: r.failed !== 0,
      usedBytes: ((r.used ?? 0) - (r.granted ?? 0)) * LOCATION_UNIT, grantedBytes: (r.granted ?? 0) * LOCATION_UNIT, uuid: r.uuid,
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
    return this.alloc.thick(o.segmentSize, Math.ceil(o.size / o.segmentSize), zero, exists, async (runs) => {
      const disk = await insert(await exists());
      await this.tables.insertRuns(disk.id, disk.segments, runs);
      return disk;
    });
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
        if (!shared) await this.alloc.free(data.readUInt32LE(k * ENTRY_BYTES + 4) >>> 8, data.readUInt32LE(k * ENTRY_BYTES + 8), disk.segmentSize / LOCATION_UNIT);
      }, progress);
      for (const a of await this.db.all<{ container_id: number; unit: number }>('SELECT container_id, unit FROM alternates WHERE disk_id = ?', [disk.id])) {
        await this.alloc.free(a.container_id, a.unit, disk.segmentSize / LOCATION_UNIT); // alternates are never shared
      }
      await freeGrants(this.db, this.alloc.pool.quarantineMs, disk.id); // a forced detach's, or a crash's before its release
      await this.db.run('DELETE FROM alternates WHERE disk_id = ?', [disk.id]);
      await this.db.run('DELETE FROM table_chunks WHERE disk_id = ?', [disk.id]);
      await this.db.run('UPDATE disks SET parent_id = NULL WHERE parent_id = ?', [disk.id]);
      await this.db.run('DELETE FROM disks WHERE id = ?', [disk.id]);
    });
    failpoint('rm.committed');
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
      exclusiveBytes: allocated - sharedBytes, sharedBytes, freeBytes: await this.alloc.freeFor(disk),
    };
  }

  async containerById(id: number): Promise<Container | undefined> {
    return (await this.listContainers()).find((c) => c.id === id);
  }

  /**
   * Every map fault looks its disk up: outside transactions the answer comes from a cache that any
   * transaction writing `disks` invalidates (Db.generation), so faults do not queue on the reader for it.
   */
  async diskById(id: number): Promise<Disk | undefined> {
    return this.diskCache.get(id, async () => {
      const row = await this.db.get<DiskRow>('SELECT * FROM disks WHERE id = ?', [id]);
      return row ? toDisk(row) : undefined;
    }, (d) => d !== undefined);
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
    const read = async () => {
      const rows = await this.db.all<{ disk_id: number; name: string; host_id: string; dev_id: number | null }>(
        `SELECT a.disk_id, d.name, a.host_id, a.dev_id FROM attachments a JOIN disks d ON d.id = a.disk_id
         WHERE (? IS NULL OR a.host_id = ?) AND (? IS NULL OR a.disk_id = ?) ORDER BY d.name, a.host_id`,
        [filter.hostId ?? null, filter.hostId ?? null, filter.diskId ?? null, filter.diskId ?? null]);
      return rows.map((r) => ({ diskId: r.disk_id, disk: r.name, hostId: r.host_id, devId: r.dev_id }));
    };
    // A disk's holders are read several times per fault batch (who to push to, one host or several, any on
    // another machine): those come from a cache.
    return filter.hostId === undefined && filter.diskId !== undefined ? this.holderCache.get(filter.diskId, read) : read();
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

export { isMapped } from './sharing.js';

