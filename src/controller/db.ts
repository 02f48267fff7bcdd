// A small promise layer over the sqlite3 package: open with WAL and synchronous=FULL (a commit that
// returned is on disk: the controller answers only after it), and serialized transactions, because one
// sqlite3 connection interleaves statements from concurrent callers.
import sqlite3 from 'sqlite3';
import { VdiskError } from '../errors.js';

export type Param = string | number | bigint | Buffer | null;

export class Db {
  private queue: Promise<unknown> = Promise.resolve();

  private constructor(private readonly db: sqlite3.Database) {}

  static async open(file: string): Promise<Db> {
    const raw = await new Promise<sqlite3.Database>((resolve, reject) => {
      const d = new sqlite3.Database(file, (err) => (err ? reject(wrap(err, `open ${file}`)) : resolve(d)));
    });
    const db = new Db(raw);
    await db.exec('PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;');
    return db;
  }

  run(sql: string, params: Param[] = []): Promise<{ lastID: number; changes: number }> {
    return new Promise((resolve, reject) => {
      this.db.run(sql, params, function (this: sqlite3.RunResult, err: Error | null) {
        if (err) reject(wrap(err, sql));
        else resolve({ lastID: this.lastID, changes: this.changes });
      });
    });
  }

  get<T>(sql: string, params: Param[] = []): Promise<T | undefined> {
    return new Promise((resolve, reject) => this.db.get(sql, params, (err, row) => (err ? reject(wrap(err, sql)) : resolve(row as T | undefined))));
  }

  all<T>(sql: string, params: Param[] = []): Promise<T[]> {
    return new Promise((resolve, reject) => this.db.all(sql, params, (err, rows) => (err ? reject(wrap(err, sql)) : resolve(rows as T[]))));
  }

  exec(sql: string): Promise<void> {
    return new Promise((resolve, reject) => this.db.exec(sql, (err) => (err ? reject(wrap(err, sql)) : resolve())));
  }

  /**
   * Runs fn inside BEGIN IMMEDIATE ... COMMIT; transactions run one at a time. The promise resolves only
   * after COMMIT returned, i.e. after SQLite's fsync: callers answer clients after that, never before.
   */
  transaction<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.queue.then(async () => {
      await this.exec('BEGIN IMMEDIATE');
      try {
        const result = await fn();
        await this.exec('COMMIT');
        return result;
      } catch (err) {
        await this.exec('ROLLBACK').catch(() => {});
        throw err;
      }
    });
    this.queue = next.catch(() => {});
    return next;
  }

  close(): Promise<void> {
    return new Promise((resolve, reject) => this.db.close((err) => (err ? reject(wrap(err, 'close')) : resolve())));
  }
}

function wrap(err: Error, what: string): VdiskError {
  const code = (err as NodeJS.ErrnoException).code ?? 'ESQLITE';
  return new VdiskError(`sqlite: ${err.message} (${what.slice(0, 80)})`, { code, cause: err });
}
