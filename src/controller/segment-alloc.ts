// Giving disks' entries storage of their own. Every flow that maps new storage reserves it in one
// transaction, does its file I/O (zeroing, copying) outside any, and names it in a second (staged, thick,
// allocateSegments): no transaction waits on I/O, and no table ever names a segment whose bytes are not
// ready. A fresh segment (from the zeroed frontier) is ready as it is: a thin fault maps it in the transaction
// that takes it. The containers' free space itself (extents, bump pointers, quarantine, zero-ahead) is allocator.ts's.
import { VdiskError } from '../errors.js';
import { LOCATION_UNIT, STATE_ZERO, type Entry } from '../table/mapping-table.js';
import { CHUNK_ENTRIES, decodeEntry, encodeEntry } from '../table/entry-codec.js';
import { failpoint } from '../util/failpoints.js';
import { Allocator, coalesce, runOf, zeroAheadWanted, type Allocated, type Run } from './allocator.js';
import type { Db } from './db.js';
import type { Disk } from './store.js';
import { checkRange, type Tables } from './tables.js';

/** Makes bytes [offset, offset + length) of a container read as zeros, durably (SegmentIo.zero). */
export type Zero = (container: number, offset: number, length: number) => Promise<void>;
/** Called with a newly allocated segment before its mapping commits (the controller zeroes it there). */
export type Prepare = (entry: Entry, length: number) => Promise<void>;

interface ContainerSpace { id: number; size: number; next_unit: number; free: number }

export class SegmentAlloc {
  /** The containers' free space, whose reservations the flows here settle. */
  readonly pool: Allocator;

  constructor(private readonly db: Db, private readonly tables: Tables) {
    this.pool = new Allocator(db);
  }

  /**
   * One segment of the disk's size, aligned to it: a freed one first, else from the bump pointer. `pending`
   * reserves it for a staged flow (see staged()); otherwise the caller's transaction names it.
   */
  async allocateUnits(disk: Disk, pinned?: number | null, pending = false): Promise<Allocated> {
    // The preference is read here, inside the caller's transaction, not taken from `disk`: callers hold Disk
    // objects from before a migration changed it, and a segment allocated on the old container after the
    // migration's scan passed it would stay behind.
    const only = pinned !== undefined ? pinned
      : await this.db.get<{ container_id: number | null }>('SELECT container_id FROM disks WHERE id = ?', [disk.id])
        .then((r) => (r ? r.container_id : disk.containerId));
    return this.pool.segment(disk.segmentSize / LOCATION_UNIT, only, pending, `${disk.segmentSize}-byte segment`);
  }

  /** Returns a segment to the free pool, quarantined (see Allocator.free); the caller knows nobody names it. */
  async free(containerId: number, unit: number, units: number): Promise<void> {
    await this.pool.free(containerId, unit, units);
  }

  /**
   * Runs a transaction that may take segments from the bump pointer: when it is refused because a zeroed
   * frontier must move first (EZEROAHEAD), moves it (outside any transaction) and runs it again. Afterwards
   * frontiers that ran low are refilled in the background, so the next faults need not wait for it.
   */
  async withFrontier<T>(fn: () => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        const r = await fn();
        this.pool.refill();
        return r;
      } catch (err) {
        const want = zeroAheadWanted(err);
        if (!want || attempt >= 32) throw err;
        await this.pool.extend(want.container, want.unit);
      }
    }
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
      let changed = false; // the plan put the entry: it finished with a durable commit of its own
      // lazyPlan: the plan only reserves (it never puts), so it commits without its own fsync: a crash may
      // undo a reservation nobody names yet, and the durable commit that maps it covers it.
      const step = await this.withFrontier(() => this.tables.updateEntry(disk, segment, (e, put) => {
        reserved.length = 0; // a transaction refused for zero-ahead reserved nothing
        planned = e;
        changed = false;
        const putGuarded = o.lazyPlan ? () => { throw new VdiskError('a lazy plan must not change the entry', { code: 'EINVAL' }); }
          : (x: Entry) => { changed = true; return put(x); };
        return plan(e, putGuarded, async (pinned) => {
          const loc = await this.allocateUnits(disk, pinned, true);
          reserved.push(runOf(loc, units));
          return loc;
        });
      }, { durable: !o.lazyPlan }));
      if ('done' in step) {
        if (changed) failpoint('staged.committed'); // e.g. a fresh segment mapped in the plan's own commit
        return step.done;
      }
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
            await this.pool.claim(reserved[i]);
            reserved.splice(i, 1);
          });
          if (r !== RETRY) for (const x of reserved.splice(0)) await this.pool.unreserve(x);
          return r;
        });
      } catch (err) {
        await this.db.transaction(async () => { for (const x of reserved) await this.pool.unreserve(x); });
        throw err;
      }
      if (result !== RETRY) {
        failpoint('staged.committed');
        return result;
      }
      await this.db.transaction(async () => { for (const x of reserved) await this.pool.unreserve(x); });
      if (attempt >= 8) throw new VdiskError(`${disk.name} segment ${segment} keeps changing under a copy: try again`, { code: 'EAGAIN' });
    }
  }

  /** Bytes of new segments the disk could still get: free extents of its size plus room above each bump pointer. */
  async freeFor(disk: Disk): Promise<number> {
    const units = disk.segmentSize / LOCATION_UNIT;
    const cs = await this.db.all<ContainerSpace>(
      'SELECT c.*, (SELECT COUNT(*) FROM free_extents f WHERE f.container_id = c.id AND f.units = ?) AS free FROM containers c WHERE failed = 0', [units]);
    let segments = 0;
    for (const c of cs) {
      if (disk.containerId !== null && c.id !== disk.containerId) continue;
      const next = Math.ceil(c.next_unit / units) * units;
      segments += c.free + Math.max(0, Math.floor((c.size / LOCATION_UNIT - next) / units));
    }
    return segments * disk.segmentSize;
  }

  /**
   * Thin provisioning: gives Zero segment `segment` of the disk its own storage and returns the new entry.
   * Idempotent: if the segment was allocated meanwhile (two faults racing), the existing entry is returned.
   */
  async allocateSegment(disk: Disk, segment: number, prepare?: Prepare): Promise<Entry> {
    return this.staged<Entry>(disk, segment, async (current, put, reserve) => {
      if ((current.states & STATE_ZERO) === 0) return { done: current };
      const { fresh, ...entry } = await reserve();
      if (fresh) {
        // Reads as zeros already: named in this (durable) transaction, no I/O.
        await this.pool.claim(runOf(entry, disk.segmentSize / LOCATION_UNIT));
        await put(entry);
        return { done: entry };
      }
      return {
        // Before the mapping commits: a crash before the segment reads as zeros leaves it unmapped.
        io: async () => { if (prepare) await prepare(entry, disk.segmentSize); },
        commit: async (_e, put, use) => {
          await use(entry);
          await put(entry);
          return entry;
        },
      };
    });
  }

  /**
   * allocateSegment for many Zero segments of one disk at once (group commit): one transaction reserves a
   * segment for each, `zero` zeroes them all (outside any transaction, durably), one transaction maps every
   * one whose entry is still Zero. When every segment is fresh (no freed segment is reusable, and the zeroed
   * frontier has room), the first transaction maps them all itself: one commit and no I/O for the lot.
   * Returns the new entries by segment; a segment that was not Zero (at plan or at commit) is absent and its
   * reservation goes back. ENOSPC reserves nothing (the caller goes one by one).
   * `durable: false` maps without an fsync of its own (Db.sync later): safe for what reaches the table, since
   * every segment reads zeros durably before its mapping commits (zeroed here, or fresh from zero-ahead).
   */
  async allocateSegments(disk: Disk, segments: number[], zero: (locs: Entry[], length: number) => Promise<void>,
    o: { durable?: boolean } = {}): Promise<Map<number, Entry>> {
    const units = disk.segmentSize / LOCATION_UNIT;
    for (const s of segments) checkRange(disk, s, 1);
    const unique = [...new Set(segments)].sort((x, y) => x - y);
    // The entries, one read per chunk (inside the caller's transaction: its view). `read` keeps the chunks for
    // mapChunks in the same transaction, which then rewrites them without reading them again.
    const entriesOf = async (list: number[], read: Map<number, Buffer>): Promise<Map<number, Entry>> => {
      const out = new Map<number, Entry>();
      for (const s of list) {
        const c = Math.floor(s / CHUNK_ENTRIES);
        let data = read.get(c);
        if (!data) read.set(c, (data = await this.tables.chunk(disk, c)));
        out.set(s, decodeEntry(data, s - c * CHUNK_ENTRIES));
      }
      return out;
    };
    const mapChunks = async (mapped: Map<number, Entry>, read: Map<number, Buffer>): Promise<void> => {
      // One rewrite per chunk, however many of its entries changed.
      const byChunk = new Map<number, Array<[number, Entry]>>();
      for (const [segment, e] of mapped) {
        const c = Math.floor(segment / CHUNK_ENTRIES);
        const list = byChunk.get(c) ?? [];
        list.push([segment, e]);
        byChunk.set(c, list);
      }
      for (const [c, list] of byChunk) {
        const data = read.get(c) ?? await this.tables.chunk(disk, c);
        for (const [segment, e] of list) encodeEntry(data, segment - c * CHUNK_ENTRIES, e);
        await this.tables.putChunk(disk.id, c, data);
      }
    };
    type Planned = Array<{ segment: number; loc: Allocated }>;
    const plan = await this.withFrontier(() => this.db.transaction(async (): Promise<{ planned: Planned; mapped?: Map<number, Entry> }> => {
      const read = new Map<number, Buffer>();
      const now = await entriesOf(unique, read);
      const zeroes = unique.filter((s) => now.get(s)!.states === STATE_ZERO);
      if (zeroes.length === 0) return { planned: [] };
      // Freed segments first, as everywhere (segment by segment); else one run above a bump pointer when the
      // preferred container (or any) has room: three statements for the lot.
      const pref = (await this.db.get<{ container_id: number | null }>('SELECT container_id FROM disks WHERE id = ?', [disk.id]))?.container_id ?? null;
      const run = await this.pool.hasReusable(units, pref) ? null : await this.pool.run(units, zeroes.length, pref, true);
      const out: Planned = run
        ? zeroes.map((segment, i) => ({ segment, loc: { states: 0, container: run.container, offset: (run.unit + i * units) * LOCATION_UNIT, alt: 0, fresh: run.fresh } }))
        : [];
      if (!run) for (const segment of zeroes) out.push({ segment, loc: await this.allocateUnits(disk, undefined, true) });
      if (!out.every((p) => p.loc.fresh)) return { planned: out };
      const mapped = new Map(out.map((p) => [p.segment, { states: 0, container: p.loc.container, offset: p.loc.offset, alt: 0 }]));
      for (const r of coalesce(out.map((p) => runOf(p.loc, units)))) await this.pool.claim(r);
      await mapChunks(mapped, read);
      return { planned: [], mapped };
    }, o)); // maps fresh segments itself; reservations it does not map are covered by the next commit anyway
    if (plan.mapped) {
      failpoint('batch.committed');
      return plan.mapped;
    }
    const planned = plan.planned;
    const giveBack = (list: Array<{ loc: Entry }>) => this.db.transaction(async () => {
      for (const p of list) await this.pool.unreserve(runOf(p.loc, units));
    });
    failpoint('batch.planned');
    try {
      // Before the mappings commit: a crash before the segments read as zeros leaves them unmapped.
      const stale = planned.filter((p) => !p.loc.fresh);
      if (stale.length) await zero(stale.map((p) => p.loc), disk.segmentSize);
    } catch (err) {
      await giveBack(planned);
      throw err;
    }
    failpoint('batch.zeroed');
    const mappedAll = await this.db.transaction(async () => {
      const read = new Map<number, Buffer>();
      const now = await entriesOf(planned.map((p) => p.segment), read);
      const mapped = new Map<number, Entry>();
      for (const p of planned) {
        if (now.get(p.segment)!.states !== STATE_ZERO) await this.pool.unreserve(runOf(p.loc, units)); // changed meanwhile
        else mapped.set(p.segment, { states: 0, container: p.loc.container, offset: p.loc.offset, alt: 0 });
      }
      for (const r of coalesce([...mapped.values()].map((e) => runOf(e, units)))) await this.pool.claim(r);
      await mapChunks(mapped, read);
      return mapped;
    }, o);
    failpoint('batch.committed');
    return mappedAll;
  }

  /**
   * A thick disk's segments: reserve, zero outside any transaction, then create the disk naming them: a thick
   * disk maps storage that may hold a removed disk's data (reused extents, or a container that was never
   * blank), and no disk reads bytes that were not zeroed for it. One run from a bump pointer when a container
   * has room for all of it (one fallocate for the lot), else segment by segment wherever there is room.
   * prefer() runs in the reservation's transaction (it may refuse; it names the container, or null for any);
   * create() runs in the commit's and names the runs in order, before they are claimed.
   */
  async thick<T>(segmentSize: number, segments: number, zero: Zero, prefer: () => Promise<number | null>, create: (runs: Run[]) => Promise<T>): Promise<T> {
    const units = segmentSize / LOCATION_UNIT;
    const runs = await this.withFrontier(() => this.db.transaction(async () => {
      const only = await prefer();
      const run = await this.pool.run(units, segments, only, true);
      if (run) return [run];
      const list: Run[] = [];
      for (let i = 0; i < segments; i++) {
        const loc = await this.pool.segment(units, only, true, `${segmentSize}-byte segment`);
        list.push({ ...runOf(loc, units), fresh: loc.fresh });
      }
      return list;
    }));
    failpoint('thick.reserved');
    try {
      for (const r of coalesce(runs.filter((x) => !x.fresh))) await zero(r.container, r.unit * LOCATION_UNIT, r.count * r.units * LOCATION_UNIT);
      failpoint('thick.zeroed');
      return await this.db.transaction(async () => {
        const created = await create(runs);
        for (const r of runs) await this.pool.claim(r);
        return created;
      });
    } catch (err) {
      await this.db.transaction(async () => { for (const r of runs) await this.pool.unreserve(r); });
      throw err;
    }
  }
}

/** A staged flow's answer to "start over": the entry changed between its two transactions. */
export const RETRY: unique symbol = Symbol('retry');
export interface Stage<T> {
  io: () => Promise<void>;
  commit: (e: Entry, put: (e: Entry) => Promise<void>, use: (loc: Entry) => Promise<void>) => Promise<T | typeof RETRY>;
}
export type Plan<T> = (e: Entry, put: (e: Entry) => Promise<void>, reserve: (pinned?: number | null) => Promise<Allocated>) => Promise<{ done: T } | Stage<T>>;

/** The same entry: states, location and alternate slot. */
export function sameEntry(a: Entry, b: Entry): boolean {
  return a.states === b.states && a.container === b.container && a.offset === b.offset && a.alt === b.alt;
}
