// Rows read outside transactions, kept until a transaction that wrote one of their tables ends (Db.generation).
// For lookups every fault batch makes (a disk, its holders, a host's credential): served without a statement
// while nothing they were read from has changed.
import type { Db } from './db.js';

export class TableCache<K, V> {
  private stamp = '';
  private rows = new Map<K, V>();

  /** `copy` guards the cached value from callers that change what they get (and the caller's from the cache). */
  constructor(private readonly db: Db, private readonly tables: readonly string[], private readonly copy: (v: V) => V) {}

  /**
   * The value for key: cached, or load()'s. Only a read that no write to the tables ended during may fill
   * the cache (the generations are taken before it), and only a plain read: inside a transaction it would see
   * that transaction's uncommitted rows, inside Db.snapshot() an older state than the generations say.
   * `keep` says which values to cache (a missing row is not: the next lookup reads again).
   */
  async get(key: K, load: () => Promise<V>, keep: (v: V) => boolean = () => true): Promise<V> {
    if (!this.db.plainRead) return load();
    const before = this.generations();
    if (this.stamp === before && this.rows.has(key)) return this.copy(this.rows.get(key) as V);
    const v = await load();
    if (keep(v) && this.generations() === before) {
      if (this.stamp !== before) {
        this.stamp = before;
        this.rows = new Map();
      }
      this.rows.set(key, this.copy(v));
    }
    return v;
  }

  private generations(): string {
    return this.tables.map((t) => this.db.generation(t)).join('/');
  }
}
