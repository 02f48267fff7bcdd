// The disks' mapping tables as stored rows: chunks of CHUNK_ENTRIES entries in the agents' byte layout, so a
// table goes to an agent without re-encoding, and an absent chunk means "every entry in the disk's fill
// state", which makes a thin disk cost the same at 1 GiB and at 1 TiB. Every statement joins the caller's
// transaction when there is one (db.ts), so a flow's table change commits together with its allocation.
import { VdiskError } from '../errors.js';
import { LOCATION_UNIT, STATE_ZERO, type Entry } from '../table/mapping-table.js';
import { turn } from '../util/sleep.js';
import { CHUNK_ENTRIES, ENTRY_BYTES, decodeEntry, encodeEntry, filledChunk } from '../table/entry-codec.js';
import type { Run } from './allocator.js';
import type { Db } from './db.js';
import type { Disk } from './store.js';

/** Chunks per query when walking a table (8 x 16 KiB). */
const CHUNKS_PER_QUERY = 8;
export const ZERO_ENTRY: Entry = { states: STATE_ZERO, container: 0, offset: 0, alt: 0 };

export class Tables {
  constructor(private readonly db: Db) {}

  /** The whole table in the agents' layout (segments x 16 bytes); for tests and small disks, see readRange. */
  async readTable(disk: Disk): Promise<Buffer> {
    return this.readRange(disk, 0, disk.segments);
  }

  /** Entries first..first+count-1 in the agents' layout, built from the stored chunks that cover them. */
  async readRange(disk: Disk, first: number, count: number): Promise<Buffer> {
    checkRange(disk, first, count);
    const out = Buffer.alloc(count * ENTRY_BYTES);
    const fill = filledChunk(Math.min(CHUNK_ENTRIES, count), { ...ZERO_ENTRY, states: disk.fillStates });
    for (let off = 0; off < out.length; off += fill.length) fill.copy(out, off);
    if (count === 0) return out;
    const rows = await this.db.all<{ chunk: number; data: Buffer }>('SELECT chunk, data FROM table_chunks WHERE disk_id = ? AND chunk BETWEEN ? AND ?',
      [disk.id, Math.floor(first / CHUNK_ENTRIES), Math.floor((first + count - 1) / CHUNK_ENTRIES)]);
    for (const r of rows) {
      const start = r.chunk * CHUNK_ENTRIES;
      const from = Math.max(first, start);
      const to = Math.min(first + count, start + r.data.length / ENTRY_BYTES);
      r.data.copy(out, (from - first) * ENTRY_BYTES, (from - start) * ENTRY_BYTES, (to - start) * ENTRY_BYTES);
    }
    return out;
  }

  /** The table chunks stored for the disk, in order; every other chunk holds only the disk's fill state. */
  async storedChunks(disk: Disk): Promise<number[]> {
    return (await this.db.all<{ chunk: number }>('SELECT chunk FROM table_chunks WHERE disk_id = ? ORDER BY chunk', [disk.id])).map((r) => r.chunk);
  }

  /**
   * The disk's stored chunks in order, fetched a few per query, with a turn of the event loop before each:
   * how every walk over a table goes (info, check, migration, snapshot, fail, rm), so its cost follows what
   * the table holds and no stretch of it keeps pings and faults waiting. Inside a transaction it reads the
   * transaction's view; a chunk the caller rewrites as it goes is not fetched again.
   */
  async *chunks(disk: Disk): AsyncGenerator<{ chunk: number; data: Buffer }> {
    for (let after = -1; ;) {
      const rows = await this.db.all<{ chunk: number; data: Buffer }>(
        'SELECT chunk, data FROM table_chunks WHERE disk_id = ? AND chunk > ? ORDER BY chunk LIMIT ?', [disk.id, after, CHUNKS_PER_QUERY]);
      for (const r of rows) {
        await turn();
        yield r;
      }
      if (rows.length < CHUNKS_PER_QUERY) return;
      after = rows[rows.length - 1].chunk;
    }
  }

  async putChunk(diskId: number, chunk: number, data: Buffer): Promise<void> {
    await this.db.run('INSERT OR REPLACE INTO table_chunks (disk_id, chunk, data) VALUES (?, ?, ?)', [diskId, chunk, data]);
  }

  async chunk(disk: Disk, chunk: number): Promise<Buffer> {
    const row = await this.db.get<{ data: Buffer }>('SELECT data FROM table_chunks WHERE disk_id = ? AND chunk = ?', [disk.id, chunk]);
    if (row) return row.data;
    return filledChunk(Math.min(CHUNK_ENTRIES, disk.segments - chunk * CHUNK_ENTRIES), { ...ZERO_ENTRY, states: disk.fillStates });
  }

  async getEntries(disk: Disk, first: number, count: number): Promise<Entry[]> {
    checkRange(disk, first, count);
    const out: Entry[] = [];
    for (let i = first; i < first + count;) {
      const chunk = Math.floor(i / CHUNK_ENTRIES);
      const data = await this.chunk(disk, chunk);
      for (; i < first + count && i < (chunk + 1) * CHUNK_ENTRIES; i++) out.push(decodeEntry(data, i - chunk * CHUNK_ENTRIES));
    }
    return out;
  }

  /** Replaces entries [first, first + entries.length); call inside a transaction or alone (one commit). */
  async setEntries(disk: Disk, first: number, entries: Entry[]): Promise<void> {
    checkRange(disk, first, entries.length);
    const write = async () => {
      for (let i = first; i < first + entries.length;) {
        const chunk = Math.floor(i / CHUNK_ENTRIES);
        const data = await this.chunk(disk, chunk);
        for (; i < first + entries.length && i < (chunk + 1) * CHUNK_ENTRIES; i++) encodeEntry(data, i - chunk * CHUNK_ENTRIES, entries[i - first]);
        await this.putChunk(disk.id, chunk, data);
      }
    };
    await this.db.transaction(write);
  }

  /** Maps entries [first, first + count) through fn and replaces the disk's operator holds, in one commit. */
  async updateEntriesAndHolds(disk: Disk, first: number, count: number, fn: (e: Entry) => Entry, holds: Array<[number, number]>): Promise<void> {
    await this.db.transaction(async () => {
      await this.setEntries(disk, first, (await this.getEntries(disk, first, count)).map(fn));
      await this.db.run('DELETE FROM holds WHERE disk_id = ?', [disk.id]);
      for (const [f, n] of holds) await this.db.run('INSERT INTO holds (disk_id, first, count) VALUES (?, ?, ?)', [disk.id, f, n]);
    });
  }

  /** Operator holds (No-write ranges whose writes wait) by disk id: [first, count] ranges. */
  async holds(): Promise<Map<number, Array<[number, number]>>> {
    const out = new Map<number, Array<[number, number]>>();
    for (const r of await this.db.all<{ disk_id: number; first: number; count: number }>('SELECT * FROM holds ORDER BY rowid')) {
      const list = out.get(r.disk_id) ?? [];
      list.push([r.first, r.count]);
      out.set(r.disk_id, list);
    }
    return out;
  }

  /** A new disk's table naming reserved runs (a thick disk): segment i of the disk is the i-th of their segments. */
  async insertRuns(diskId: number, segments: number, runs: Run[]): Promise<void> {
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
      await this.db.run('INSERT INTO table_chunks (disk_id, chunk, data) VALUES (?, ?, ?)', [diskId, first / CHUNK_ENTRIES, data]);
    }
  }

  /** One transaction over entry `segment`: fn sees it and may replace it with put() (the chunk is rewritten). */
  updateEntry<T>(disk: Disk, segment: number, fn: (e: Entry, put: (e: Entry) => Promise<void>) => Promise<T>, o: { durable?: boolean } = {}): Promise<T> {
    checkRange(disk, segment, 1);
    return this.db.transaction(async () => {
      const chunk = Math.floor(segment / CHUNK_ENTRIES);
      const data = await this.chunk(disk, chunk);
      const k = segment - chunk * CHUNK_ENTRIES;
      return fn(decodeEntry(data, k), async (e) => {
        encodeEntry(data, k, e);
        await this.putChunk(disk.id, chunk, data);
      });
    }, o);
  }
}

export function checkRange(disk: Disk, first: number, count: number): void {
  if (!Number.isInteger(first) || !Number.isInteger(count) || first < 0 || count < 0 || first + count > disk.segments) {
    throw new VdiskError(`entries ${first}..${first + count - 1} are outside disk ${disk.name} (${disk.segments} segments)`, { code: 'ERANGE' });
  }
}
