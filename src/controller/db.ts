// A small promise layer over the sqlite3 package with one statement discipline. Writes happen only inside
// transaction(): BEGIN IMMEDIATE ... COMMIT on the writer connection, one transaction at a time, committed
// with WAL and synchronous=FULL (a commit that returned is on disk: the controller answers only after it),
// or lazily (durable: false) for steps whose durability waits for the next durable commit or sync().
// Reads outside a transaction go to a second, read-only connection, which over WAL sees committed data only:
// a fault answer or a table load can never read (and push to agents) another request's open transaction.
import { AsyncLocalStorage } from 'node:async_hooks';
import sqlite3 from 'sqlite3';
import { VdiskError } from '../errors.js';

export type Param = string | number | bigint | Buffer | null;

/** A cached statement; `ready` until its prepare succeeded. */
interface Prepared { st: sqlite3.Statement; ready?: Promise<void> }

/** Marks the async context of an open transaction: its statements run on the writer, inside it. */
interface TxContext { db: Db }

export class Db {
  private queue: Promise<unknown> = Promise.resolve();
  private readonly tx = new AsyncLocalStorage<TxContext>();
  /** Statements and transactions completed, by connection: tests observe which connection served what. */
  readonly stats = { readerStatements: 0, writerStatements: 0, transactions: 0, lazyCommits: 0, syncs: 0 };
  /**
   * Commits since the last durable one: sync() has something to make durable while this is non-zero. 1 at
   * open: a previous process's lazy commits may still sit in the WAL unsynced (it died; the OS kept them).
   */
  private unsynced = 1;
  /** The sync() queued and not yet started: callers arriving meanwhile share it (group commit). */
  private pendingSync: Promise<void> | undefined;
  /** Whether the open transaction changed a row: a commit that changed none writes no WAL frame, no fsync. */
  private txWrote = false;

  /** The connection of the snapshot() the caller runs in, if any. */
  private readonly snap = new AsyncLocalStorage<sqlite3.Database>();
  /**
   * Prepared statements of the reader and the writer, by SQL text: preparing and finalizing each call cost
   * more than the statement itself on the fault path. The sqlite3 package runs a statement's calls in the
   * order they were made, so one statement serves interleaved callers. No statement is left half-stepped:
   * it would keep its read transaction (and an old WAL snapshot) open for the whole connection.
   */
  private readonly prepared = new Map<sqlite3.Database, Map<string, Prepared>>();
  /** Per table watched with generation(): bumped when a transaction that wrote it ends (commit or rollback). */
  private readonly generations = new Map<string, { n: number; names: RegExp }>();
  /** Watched tables the open transaction wrote, or '*' for a statement exec() ran (a migration). */
  private readonly wrote = new Set<string>();

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

  /** Whether a read now sees committed data as of now: outside transactions and snapshots (TableCache). */
  get plainRead(): boolean {
    return !this.inTransaction && this.snap.getStore() === undefined;
  }

  /** A write: inside the caller's transaction, or as a transaction of its own. */
  run(sql: string, params: Param[] = []): Promise<{ lastID: number; changes: number }> {
    if (!this.inTransaction) return this.transaction(() => this.run(sql, params));
    this.stats.writerStatements++;
    const wrote = () => { this.txWrote = true; };
    for (const [table, g] of this.generations) if (g.names.test(sql)) this.wrote.add(table);
    return new Promise((resolve, reject) => {
      this.withStatement(this.writer, sql, (st) => st.run(params, function (this: sqlite3.RunResult, err: Error | null) {
        if (err) reject(wrap(err, sql));
        else {
          if (this.changes > 0) wrote();
          resolve({ lastID: this.lastID, changes: this.changes });
        }
      }), (err) => reject(wrap(err, sql)));
    });
  }

  /**
   * The first row. Through all(): a statement stepped to its end holds no read transaction afterwards, in one
   * trip to the thread pool instead of a get's two (get and reset). For statements of one row.
   */
  async get<T>(sql: string, params: Param[] = []): Promise<T | undefined> {
    return (await this.all<T>(sql, params))[0];
  }

  all<T>(sql: string, params: Param[] = []): Promise<T[]> {
    const conn = this.connection();
    return new Promise((resolve, reject) => {
      const done = (err: Error | null, rows: unknown[]): void => (err ? reject(wrap(err, sql)) : resolve(rows as T[]));
      if (conn !== this.reader && conn !== this.writer) conn.all(sql, params, done);
      else this.withStatement(conn, sql, (st) => st.all(params, done), (err) => done(err, []));
    });
  }

  /** Statements without results (schema migrations, pragmas): like run(), a transaction's or its own. */
  exec(sql: string): Promise<void> {
    if (!this.inTransaction) return this.transaction(() => this.exec(sql));
    this.stats.writerStatements++;
    this.wrote.add('*');
    this.txWrote = true;
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
        this.txWrote = false;
        try {
          const result = await fn();
          await execOn(this.writer, 'COMMIT');
          this.stats.transactions++;
          if (lazy) {
            this.stats.lazyCommits++;
            this.unsynced++;
          } else if (this.txWrote) {
            this.unsynced = 0; // the WAL's fsync covers every earlier commit (the WAL is replayed in order)
          }
          return result;
        } catch (err) {
          await execOn(this.writer, 'ROLLBACK').catch(() => {});
          throw err;
        } finally {
          this.endWrites();
        }
      } finally {
        if (lazy) await execOn(this.writer, 'PRAGMA synchronous = FULL');
      }
    }));
    this.queue = next.catch(() => {});
    return next;
  }

  /** Commits that sync() would make durable (tests and stats observe it). */
  get lazyPending(): number {
    return this.unsynced;
  }

  /**
   * Makes every commit so far durable: one durable transaction (its WAL fsync covers the lazy commits before
   * it) when there were lazy ones, nothing otherwise. Callers arriving while one is queued share it.
   */
  sync(): Promise<void> {
    if (this.unsynced === 0) return Promise.resolve(); // every commit so far is durable: nothing to wait for
    if (!this.pendingSync) {
      const p = this.transaction(async () => {
        this.pendingSync = undefined; // started: a later caller may need commits after this one
        if (this.unsynced === 0) return; // a durable commit meanwhile: an empty transaction, no fsync
        this.stats.syncs++;
        await this.run(SYNC_SQL);
      });
      this.pendingSync = p;
    }
    return this.pendingSync;
  }

  /** How many prepared statements the reader and writer keep (tests observe the cache). */
  preparedStatements(): number {
    let n = 0;
    for (const m of this.prepared.values()) n += m.size;
    return n;
  }

  /**
   * A number that changes whenever a transaction that wrote `table` ends. For caches of rows read outside
   * transactions: take the generation before the read, and the row is current as long as it is unchanged.
   * Bumped after COMMIT returned (not at the write): a read that began before it may have seen the old row.
   * Conservative: any write statement naming the table counts, and so does every exec() (migrations).
   */
  generation(table: string): number {
    let g = this.generations.get(table);
    if (!g) this.generations.set(table, (g = { n: 0, names: new RegExp(`\\b${table}\\b`, 'i') }));
    return g.n;
  }

  private endWrites(): void {
    for (const [table, g] of this.generations) if (this.wrote.has(table) || this.wrote.has('*')) g.n++;
    this.wrote.clear();
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
    const all = [...this.prepared.values()].flatMap((m) => [...m.values()]);
    await Promise.all(all.map((p) => p.ready?.catch(() => {})));
    await Promise.all(all.map((p) => new Promise<void>((resolve) => p.st.finalize(() => resolve()))));
    this.prepared.clear();
    await Promise.all([this.reader, this.writer].map((d) => new Promise<void>((resolve, reject) => d.close((err) => (err ? reject(wrap(err, 'close')) : resolve())))));
  }

  /**
   * Calls use with the connection's prepared statement for sql, or fail with the error of its prepare. The
   * first call waits for the prepare: the sqlite3 package never calls back the calls queued on a statement
   * whose prepare failed. A failed prepare is not kept (the next call prepares again).
   */
  private withStatement(conn: sqlite3.Database, sql: string, use: (st: sqlite3.Statement) => void, fail: (err: Error) => void): void {
    let cache = this.prepared.get(conn);
    if (!cache) this.prepared.set(conn, (cache = new Map()));
    let p = cache.get(sql);
    if (!p) {
      // Callers build SQL from a bounded set of shapes; the bound only guards against one that is not.
      if (cache.size >= MAX_PREPARED) {
        const [oldest, old] = cache.entries().next().value as [string, Prepared];
        cache.delete(oldest);
        if (old.ready) old.ready.then(() => old.st.finalize(), () => {});
        else old.st.finalize();
      }
      const map = cache;
      const entry: Prepared = { st: undefined as unknown as sqlite3.Statement };
      entry.ready = new Promise<void>((resolve, reject) => {
        entry.st = conn.prepare(sql, (err: Error | null) => {
          if (err) {
            if (map.get(sql) === entry) map.delete(sql);
            reject(err);
          } else {
            entry.ready = undefined;
            resolve();
          }
        });
      });
      cache.set(sql, (p = entry));
    }
    const found = p;
    if (found.ready) found.ready.then(() => use(found.st), fail);
    else use(found.st);
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

const MAX_PREPARED = 256;
// A write for sync() to commit: an empty transaction writes no WAL frame and so has no fsync.
const SYNC_SQL = "INSERT INTO counters (name, next) VALUES ('sync', 1) ON CONFLICT (name) DO UPDATE SET next = next + 1";

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
