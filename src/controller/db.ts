// A small promise layer over the sqlite3 package with one statement discipline. Writes happen only inside
// transaction(): BEGIN IMMEDIATE ... COMMIT on the writer connection, one transaction at a time, committed
// with WAL and synchronous=FULL (a commit that returned is on disk: the controller answers only after it).
// Reads outside a transaction go to a second, read-only connection, which over WAL sees committed data only:
// a fault answer or a table load can never read (and push to agents) another request's open transaction.
import { AsyncLocalStorage } from 'node:async_hooks';
import sqlite3 from 'sqlite3';
import { VdiskError } from '../errors.js';

export type Param = string | number | bigint | Buffer | null;

/** Marks the async context of an open transaction: its statements run on the writer, inside it. */
interface TxContext { db: Db }

export class Db {
  private queue: Promise<unknown> = Promise.resolve();
  private readonly tx = new AsyncLocalStorage<TxContext>();
  /** Statements and transactions completed, by connection: tests observe which connection served what. */
  readonly stats = { readerStatements: 0, writerStatements: 0, transactions: 0 };

  /** The connection of the snapshot() the caller runs in, if any. */
  private readonly snap = new AsyncLocalStorage<sqlite3.Database>();

  private constructor(private readonly file: string, private readonly writer: sqlite3.Database, private readonly reader: sqlite3.Database) {}

  static async open(file: string): Promise<Db> {
    const writer = await connect(file, sqlite3.OPEN_READWRITE | sqlite3.OPEN_CREATE);
    try {
      await execOn(writer, 'PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;');
    } catch (err) {
      writer.close();
      throw err;
    }
    // Opened after WAL is on (the mode is stored in the file), so the reader never blocks the writer.
    const reader = await connect(file, sqlite3.OPEN_READONLY).catch((err: unknown) => {
      writer.close();
      throw err;
    });
    await execOn(reader, 'PRAGMA busy_timeout = 5000;');
    return new Db(file, writer, reader);
  }

  /** Whether the caller runs inside one of this database's transactions. */
  get inTransaction(): boolean {
    return this.tx.getStore()?.db === this;
  }

  /** A write: inside the caller's transaction, or as a transaction of its own. */
  run(sql: string, params: Param[] = []): Promise<{ lastID: number; changes: number }> {
    if (!this.inTransaction) return this.transaction(() => this.run(sql, params));
    this.stats.writerStatements++;
    return new Promise((resolve, reject) => {
      this.writer.run(sql, params, function (this: sqlite3.RunResult, err: Error | null) {
        if (err) reject(wrap(err, sql));
        else resolve({ lastID: this.lastID, changes: this.changes });
      });
    });
  }

  get<T>(sql: string, params: Param[] = []): Promise<T | undefined> {
    const conn = this.connection();
    return new Promise((resolve, reject) => conn.get(sql, params, (err, row) => (err ? reject(wrap(err, sql)) : resolve(row as T | undefined))));
  }

  all<T>(sql: string, params: Param[] = []): Promise<T[]> {
    const conn = this.connection();
    return new Promise((resolve, reject) => conn.all(sql, params, (err, rows) => (err ? reject(wrap(err, sql)) : resolve(rows as T[]))));
  }

  /** Statements without results (schema migrations, pragmas): like run(), a transaction's or its own. */
  exec(sql: string): Promise<void> {
    if (!this.inTransaction) return this.transaction(() => this.exec(sql));
    this.stats.writerStatements++;
    return execOn(this.writer, sql);
  }

  /**
   * Runs fn inside BEGIN IMMEDIATE ... COMMIT; transactions run one at a time. The promise resolves only
   * after COMMIT returned, i.e. after SQLite's fsync: callers answer clients after that, never before.
   * Called inside a transaction, fn joins it (its writes commit or roll back with the outer one).
   * fn must not wait for file I/O or other requests: every other write waits for it.
   */
  transaction<T>(fn: () => Promise<T>, o: { durable?: boolean } = {}): Promise<T> {
    if (this.inTransaction) return fn();
    // durable: false commits without its own fsync (synchronous = NORMAL for this one transaction). For
    // steps that nobody is answered on and that a crash may undo (a staged flow's reservation: recovered or
    // simply gone at start): the next durable commit's fsync of the WAL covers them, in order.
    const lazy = o.durable === false;
    const next = this.queue.then(() => this.tx.run({ db: this }, async () => {
      if (lazy) await execOn(this.writer, 'PRAGMA synchronous = NORMAL');
      try {
        await execOn(this.writer, 'BEGIN IMMEDIATE');
        try {
          const result = await fn();
          await execOn(this.writer, 'COMMIT');
          this.stats.transactions++;
          return result;
        } catch (err) {
          await execOn(this.writer, 'ROLLBACK').catch(() => {});
          throw err;
        }
      } finally {
        if (lazy) await execOn(this.writer, 'PRAGMA synchronous = FULL');
      }
    }));
    this.queue = next.catch(() => {});
    return next;
  }

  /**
   * Runs fn's reads on one read transaction of a connection of its own: every statement sees the database
   * as of fn's first read, whatever commits meanwhile (WAL keeps that snapshot). For a walk that yields the
   * event loop between its reads (vdisk check) and must not mix states from before and after another
   * request's commit. Writes inside fn still go to the writer as usual.
   */
  async snapshot<T>(fn: () => Promise<T>): Promise<T> {
    if (this.inTransaction || this.snap.getStore()) return fn();
    const conn = await connect(this.file, sqlite3.OPEN_READONLY);
    try {
      await execOn(conn, 'PRAGMA busy_timeout = 5000; BEGIN');
      return await this.snap.run(conn, fn);
    } finally {
      await execOn(conn, 'COMMIT').catch(() => {});
      await new Promise<void>((resolve) => conn.close(() => resolve()));
    }
  }

  async close(): Promise<void> {
    await this.queue;
    await Promise.all([this.reader, this.writer].map((d) => new Promise<void>((resolve, reject) => d.close((err) => (err ? reject(wrap(err, 'close')) : resolve())))));
  }

  private connection(): sqlite3.Database {
    if (this.inTransaction) {
      this.stats.writerStatements++;
      return this.writer;
    }
    this.stats.readerStatements++;
    return this.snap.getStore() ?? this.reader;
  }
}

function connect(file: string, mode: number): Promise<sqlite3.Database> {
  return new Promise<sqlite3.Database>((resolve, reject) => {
    const d = new sqlite3.Database(file, mode, (err) => (err ? reject(wrap(err, `open ${file}`)) : resolve(d)));
  });
}

function execOn(d: sqlite3.Database, sql: string): Promise<void> {
  return new Promise((resolve, reject) => d.exec(sql, (err) => (err ? reject(wrap(err, sql)) : resolve())));
}

function wrap(err: Error, what: string): VdiskError {
  const code = (err as NodeJS.ErrnoException).code ?? 'ESQLITE';
  return new VdiskError(`sqlite: ${err.message} (${what.slice(0, 80)})`, { code, cause: err });
}
