// Segment allocation in the containers: freed extents first (once out of quarantine), else a bump pointer.
// A segment is either committed (some table names it, or will in the same transaction) or reserved
// ("pending"): handed to a flow whose file I/O (zeroing, copying) runs between two transactions. No table
// names a reserved segment, so a crash leaves it to recoverPending(), and nobody ever reads it.
// Above the bump pointer, [next_unit, zeroed_unit) is the zeroed frontier: storage made to read as zeros ahead
// of need, in one go (zero-ahead), that nothing has written since. A segment taken from it is "fresh": it needs
// no zeroing before its mapping commits. Once a zeroer is installed, no bump allocation crosses zeroed_unit
// (it asks for zero-ahead instead), so zero-ahead never races a flow writing above the bump pointer.
// Every function but extend() runs inside the caller's transaction (db.run/get join it).
import { VdiskError } from '../errors.js';
import { LOCATION_UNIT, type Entry } from '../table/mapping-table.js';
import type { Db } from './db.js';

interface ContainerRow { id: number; name: string; path: string; size: number; next_unit: number; zeroed_unit: number; failed: number }

/** A run of `count` segments of `units` units each, from `unit` on, in one container. */
export interface Run { container: number; unit: number; units: number; count: number; fresh?: boolean }

/** A segment's location; `fresh` when it came from the zeroed frontier (it reads as zeros already). */
export type Allocated = Entry & { fresh?: boolean };

/** Makes [offset, offset + length) of a container read as zeros, durably (SegmentIo.zero). */
export type ZeroFn = (container: number, offset: number, length: number) => Promise<void>;

/** How far one zero-ahead reaches past what was asked (64 MiB: one fallocate and one fdatasync). */
export const ZERO_AHEAD_UNITS = (64 << 20) / LOCATION_UNIT;
const MAX_MARGIN_UNITS = (256 << 20) / LOCATION_UNIT;

/** A bump allocation that needs the frontier moved first: retry the transaction after extend(container, unit). */
const zeroWanted = new WeakMap<object, { container: number; unit: number }>();

/** What a transaction refused with EZEROAHEAD waits for (see SegmentAlloc.withFrontier), or undefined. */
export function zeroAheadWanted(err: unknown): { container: number; unit: number } | undefined {
  return typeof err === 'object' && err !== null ? zeroWanted.get(err) : undefined;
}

export class Allocator {
  /**
   * How long a freed segment waits before reuse. Reads planned under the old mapping may still be in flight
   * on the agent that faulted (other agents were drained by a blocking push) and must not see another
   * disk's data. Stored per extent as a wall-clock time, so a controller restart does not shorten it.
   */
  quarantineMs = 10_000;

  /**
   * Installed by the controller (its SegmentIo): with it, bump allocations come only from the zeroed frontier.
   * Without one (a store used alone, in tests) the frontier stays empty and every new segment is zeroed by
   * its flow, as before zero-ahead existed.
   */
  zeroer: ZeroFn | null = null;
  private readonly extending = new Map<number, Promise<void>>();
  /** Containers whose frontier ran below half a zero-ahead: refill() extends them in the background. */
  private readonly low = new Set<number>();
  /**
   * Zeroed storage kept above the bump pointers, in units: ZERO_AHEAD_UNITS, or twice the biggest single
   * allocation seen (up to MAX_MARGIN_UNITS), so that windows mapped ahead of sequential writers find zeroed
   * storage instead of waiting for zero-ahead in their batch.
   */
  private margin = ZERO_AHEAD_UNITS;
  /** Where a background zero-ahead reports its failure (the controller's log). */
  log: ((m: string) => void) | undefined;

  constructor(private readonly db: Db) {}

  /**
   * One segment of `units` units, aligned to its size, on container `only` (or any, in id order, when null).
   * `pending` reserves it (see the file comment); claim() or unreserve() settles it.
   */
  async segment(units: number, only: number | null, pending: boolean, what: string): Promise<Allocated> {
    const candidates = await this.db.all<ContainerRow>('SELECT * FROM containers WHERE failed = 0 ORDER BY (id = ?) DESC, id', [only ?? -1]);
    const usable = only === null ? candidates : candidates.filter((c) => c.id === only);
    for (const c of usable) {
      const free = await this.db.get<{ unit: number }>(
        'SELECT unit FROM free_extents WHERE container_id = ? AND units = ? AND reusable_at <= ? LIMIT 1', [c.id, units, Date.now()]);
      let unit: number;
      let fresh = false;
      if (free) {
        unit = free.unit;
        await this.db.run('DELETE FROM free_extents WHERE container_id = ? AND units = ? AND unit = ?', [c.id, units, unit]);
      } else {
        unit = Math.ceil(c.next_unit / units) * units;
        if ((unit + units) * LOCATION_UNIT > c.size) continue;
        fresh = this.fresh(c, unit + units);
        await this.db.run('UPDATE containers SET next_unit = ? WHERE id = ?', [unit + units, c.id]);
      }
      await this.db.run('INSERT INTO allocations (container_id, unit, units, refcount, pending) VALUES (?, ?, ?, 1, ?)', [c.id, unit, units, pending ? 1 : 0]);
      const loc: Allocated = { states: 0, container: c.id, offset: unit * LOCATION_UNIT, alt: 0 };
      // Not enumerable: the location travels on as an entry (answers, JSON, spreads) without it.
      if (fresh) Object.defineProperty(loc, 'fresh', { value: true, enumerable: false });
      return loc;
    }
    const failed = only === null ? undefined : await this.db.get<{ name: string }>('SELECT name FROM containers WHERE id = ? AND failed = 1', [only]);
    if (failed) throw new VdiskError(`no space: the disk's container ${failed.name} has failed, and nothing new is allocated on a failed container`, { code: 'ENOSPC' });
    throw new VdiskError(`no space left: no ${only === null ? '' : 'preferred '}container can hold another ${what}`, { code: 'ENOSPC' });
  }

  /** `count` consecutive segments above one container's bump pointer (reserved when pending), or null. */
  async run(units: number, count: number, only: number | null, pending: boolean): Promise<Run | null> {
    const candidates = await this.db.all<ContainerRow>('SELECT * FROM containers WHERE failed = 0 ORDER BY id');
    for (const c of candidates) {
      if (only !== null && c.id !== only) continue;
      const unit = Math.ceil(c.next_unit / units) * units;
      if ((unit + count * units) * LOCATION_UNIT > c.size) continue;
      const fresh = this.fresh(c, unit + count * units);
      await this.db.run('UPDATE containers SET next_unit = ? WHERE id = ?', [unit + count * units, c.id]);
      await this.db.run(`WITH RECURSIVE seq(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM seq WHERE i + 1 < ?)
        INSERT INTO allocations (container_id, unit, units, refcount, pending) SELECT ?, ? + i * ?, ?, 1, ? FROM seq`, [count, c.id, unit, units, units, pending ? 1 : 0]);
      return { container: c.id, unit, units, count, ...(fresh ? { fresh } : {}) };
    }
    return null;
  }

  /**
   * Whether a bump allocation ending at `end` lies in the container's zeroed frontier. With a zeroer it must:
   * otherwise the caller's transaction is refused (EZEROAHEAD) and retried after extend().
   */
  private fresh(c: ContainerRow, end: number): boolean {
    // A bigger demand than zero-ahead was made for (a sequential writer's window) widens the margin kept;
    // a bigger one still (a thick disk's run) is a one-off and does not.
    const demand = end - c.next_unit;
    if (demand <= MAX_MARGIN_UNITS / 2) this.margin = Math.max(this.margin, 2 * demand);
    if (end <= c.zeroed_unit) {
      if (this.zeroer && c.zeroed_unit - end < this.margin / 2) this.low.add(c.id);
      return true;
    }
    if (!this.zeroer) return false;
    const err = new VdiskError(`container ${c.name}: its zeroed frontier ends at unit ${c.zeroed_unit}, short of ${end}`, { code: 'EZEROAHEAD' });
    zeroWanted.set(err, { container: c.id, unit: end });
    throw err;
  }

  /**
   * Zero-ahead: makes the frontier reach at least unit `atLeast` (and ZERO_AHEAD_UNITS past where it was),
   * outside any transaction. The range zeroed lies above both zeroed_unit and next_unit, where no allocation
   * can be (none crosses zeroed_unit), and the new frontier is recorded only if the frontier still reaches the
   * range: an unreserve() that lowered it meanwhile left bytes below it unknown. A crash anywhere in between
   * zeroed unallocated storage and recorded nothing: harmless, so the record needs no fsync of its own (a
   * later durable commit that allocates from it covers it, in order). One at a time per container.
   */
  extend(container: number, atLeast: number): Promise<void> {
    const running = this.extending.get(container);
    if (running) return running;
    const p = this.extendNow(container, atLeast).finally(() => this.extending.delete(container));
    this.extending.set(container, p);
    return p;
  }

  private async extendNow(container: number, atLeast: number): Promise<void> {
    const zeroer = this.zeroer;
    const c = await this.db.get<ContainerRow>('SELECT * FROM containers WHERE id = ?', [container]);
    if (!zeroer || !c || c.failed) return;
    const from = Math.max(c.zeroed_unit, c.next_unit);
    const to = Math.min(Math.floor(c.size / LOCATION_UNIT), Math.max(atLeast + this.margin / 2, from + this.margin));
    if (to <= from) return;
    await zeroer(container, from * LOCATION_UNIT, (to - from) * LOCATION_UNIT);
    await this.db.transaction(() => this.db.run(
      'UPDATE containers SET zeroed_unit = ? WHERE id = ? AND zeroed_unit < ? AND (zeroed_unit >= ? OR next_unit >= ?)',
      [to, container, to, from, from]), { durable: false });
  }

  /** Starts zero-ahead in the background for containers whose frontier runs low; call outside transactions. */
  refill(): void {
    if (this.db.inTransaction) return;
    for (const id of this.low) {
      this.low.delete(id);
      this.extend(id, 0).catch((err: Error) => this.log?.(`zero-ahead on container ${id}: ${err.message}`));
    }
  }

  /** Whether a freed segment of this size is reusable now on container `only` (or any, when null). */
  async hasReusable(units: number, only: number | null): Promise<boolean> {
    const row = await this.db.get<{ one: number }>(`SELECT 1 AS one FROM free_extents f JOIN containers c ON c.id = f.container_id
      WHERE c.failed = 0 AND f.units = ? AND f.reusable_at <= ? AND (? IS NULL OR f.container_id = ?) LIMIT 1`, [units, Date.now(), only, only]);
    return row !== undefined;
  }

  /** The reserved segments of a run become committed: the caller names them in this transaction. */
  async claim(r: Run): Promise<void> {
    await this.db.run('UPDATE allocations SET pending = 0 WHERE container_id = ? AND unit >= ? AND unit < ? AND pending = 1',
      [r.container, r.unit, r.unit + r.count * r.units]);
  }

  /**
   * Gives back reserved segments no mapping will name. Nobody ever read them (no table named them), so they
   * are reusable at once; a run at the top of its container lowers the bump pointer instead. Its flow may
   * have written it (a copy), so the zeroed frontier ends there too: those bytes are not known zeros.
   */
  async unreserve(r: Run): Promise<void> {
    const end = r.unit + r.count * r.units;
    const { changes } = await this.db.run('DELETE FROM allocations WHERE container_id = ? AND unit >= ? AND unit < ? AND pending = 1', [r.container, r.unit, end]);
    if (changes === 0) return;
    const top = await this.db.run('UPDATE containers SET next_unit = ?, zeroed_unit = MIN(zeroed_unit, ?) WHERE id = ? AND next_unit = ?', [r.unit, r.unit, r.container, end]);
    if (top.changes === 1) return;
    await this.db.run(`WITH RECURSIVE seq(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM seq WHERE i + 1 < ?)
      INSERT OR REPLACE INTO free_extents (container_id, unit, units, reusable_at) SELECT ?, ? + i * ?, ?, 0 FROM seq`, [r.count, r.container, r.unit, r.units, r.units]);
  }

  /** At start: reservations of flows a crash interrupted go back to the free pool. Returns how many. */
  async recoverPending(): Promise<number> {
    const rows = await this.db.all<{ container_id: number; unit: number; units: number }>('SELECT container_id, unit, units FROM allocations WHERE pending = 1');
    for (const r of rows) await this.unreserve({ container: r.container_id, unit: r.unit, units: r.units, count: 1 });
    return rows.length;
  }

  /**
   * At start: nothing above the bump pointer is known zero any more. Commits without their own fsync (a
   * flow's reservation, whose copy then reached the container) are lost with a power cut, and the bump pointer
   * they moved comes back below bytes that were written: taken for fresh, they would be mapped unzeroed into
   * another disk. Zero-ahead rebuilds the frontier before the next bump allocation (it is cheap: one
   * fallocate and one fdatasync per container). Returns how many containers had one.
   */
  async forgetZeroed(): Promise<number> {
    return (await this.db.run('UPDATE containers SET zeroed_unit = next_unit WHERE zeroed_unit > next_unit')).changes;
  }

  /** Returns a committed segment to the free pool (the caller knows nobody names it), quarantined. */
  async free(containerId: number, unit: number, units: number): Promise<void> {
    await this.db.run('DELETE FROM allocations WHERE container_id = ? AND unit = ?', [containerId, unit]);
    await this.db.run('INSERT OR REPLACE INTO free_extents (container_id, unit, units, reusable_at) VALUES (?, ?, ?, ?)',
      [containerId, unit, units, Date.now() + this.quarantineMs]);
  }
}

/** A single segment as a run of one. */
export function runOf(e: { container: number; offset: number }, units: number): Run {
  return { container: e.container, unit: e.offset / LOCATION_UNIT, units, count: 1 };
}

/** Adjacent single segments of one container as one run, so zeroing them takes one call. */
export function coalesce(runs: Run[]): Run[] {
  const out: Run[] = [];
  for (const r of runs) {
    const last = out[out.length - 1];
    if (last && last.container === r.container && last.units === r.units && last.unit + last.count * last.units === r.unit) last.count += r.count;
    else out.push({ ...r });
  }
  return out;
}
