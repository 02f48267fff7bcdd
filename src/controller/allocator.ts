// Segment allocation in the containers: freed extents first (once out of quarantine), else a bump pointer.
// A segment is either committed (some table names it, or will in the same transaction) or reserved
// ("pending"): handed to a flow whose file I/O (zeroing, copying) runs between two transactions. No table
// names a reserved segment, so a crash leaves it to recoverPending(), and nobody ever reads it.
// Every function runs inside the caller's transaction (db.run/get join it).
import { VdiskError } from '../errors.js';
import { LOCATION_UNIT, type Entry } from '../table/mapping-table.js';
import type { Db } from './db.js';

interface ContainerRow { id: number; name: string; path: string; size: number; next_unit: number; failed: number }

/** A run of `count` segments of `units` units each, from `unit` on, in one container. */
export interface Run { container: number; unit: number; units: number; count: number }

export class Allocator {
  /**
   * How long a freed segment waits before reuse. Reads planned under the old mapping may still be in flight
   * on the agent that faulted (other agents were drained by a blocking push) and must not see another
   * disk's data. Stored per extent as a wall-clock time, so a controller restart does not shorten it.
   */
  quarantineMs = 10_000;

  constructor(private readonly db: Db) {}

  /**
   * One segment of `units` units, aligned to its size, on container `only` (or any, in id order, when null).
   * `pending` reserves it (see the file comment); claim() or unreserve() settles it.
   */
  async segment(units: number, only: number | null, pending: boolean, what: string): Promise<Entry> {
    const candidates = await this.db.all<ContainerRow>('SELECT * FROM containers WHERE failed = 0 ORDER BY (id = ?) DESC, id', [only ?? -1]);
    const usable = only === null ? candidates : candidates.filter((c) => c.id === only);
    for (const c of usable) {
      const free = await this.db.get<{ unit: number }>(
        'SELECT unit FROM free_extents WHERE container_id = ? AND units = ? AND reusable_at <= ? LIMIT 1', [c.id, units, Date.now()]);
      let unit: number;
      if (free) {
        unit = free.unit;
        await this.db.run('DELETE FROM free_extents WHERE container_id = ? AND units = ? AND unit = ?', [c.id, units, unit]);
      } else {
        unit = Math.ceil(c.next_unit / units) * units;
        if ((unit + units) * LOCATION_UNIT > c.size) continue;
        await this.db.run('UPDATE containers SET next_unit = ? WHERE id = ?', [unit + units, c.id]);
      }
      await this.db.run('INSERT INTO allocations (container_id, unit, units, refcount, pending) VALUES (?, ?, ?, 1, ?)', [c.id, unit, units, pending ? 1 : 0]);
      return { states: 0, container: c.id, offset: unit * LOCATION_UNIT, alt: 0 };
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
      await this.db.run('UPDATE containers SET next_unit = ? WHERE id = ?', [unit + count * units, c.id]);
      await this.db.run(`WITH RECURSIVE seq(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM seq WHERE i + 1 < ?)
        INSERT INTO allocations (container_id, unit, units, refcount, pending) SELECT ?, ? + i * ?, ?, 1, ? FROM seq`, [count, c.id, unit, units, units, pending ? 1 : 0]);
      return { container: c.id, unit, units, count };
    }
    return null;
  }

  /** The reserved segments of a run become committed: the caller names them in this transaction. */
  async claim(r: Run): Promise<void> {
    await this.db.run('UPDATE allocations SET pending = 0 WHERE container_id = ? AND unit >= ? AND unit < ? AND pending = 1',
      [r.container, r.unit, r.unit + r.count * r.units]);
  }

  /**
   * Gives back reserved segments no mapping will name. Nobody ever read them (no table named them), so they
   * are reusable at once; a run at the top of its container lowers the bump pointer instead.
   */
  async unreserve(r: Run): Promise<void> {
    const end = r.unit + r.count * r.units;
    const { changes } = await this.db.run('DELETE FROM allocations WHERE container_id = ? AND unit >= ? AND unit < ? AND pending = 1', [r.container, r.unit, end]);
    if (changes === 0) return;
    const top = await this.db.run('UPDATE containers SET next_unit = ? WHERE id = ? AND next_unit = ?', [r.unit, r.container, end]);
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
