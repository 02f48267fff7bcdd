// Live migration of a disk to another container, one segment at a time under the disk's lock: No-write on
// every agent mapping the disk (blocking: no write to the segment is in flight), copy and remap in one
// store transaction, then the new entry to every agent. Writes to the segment meanwhile fault and wait for
// the lock. The job is recorded in the store, so a controller restart resumes it where the tables say.
import { failpoint } from '../util/failpoints.js';
import { agentRequest } from '../protocol/agent-ops.js';
import { CHUNK_ENTRIES, ENTRY_BYTES, decodeEntry, encodeEntry } from '../table/entry-codec.js';
import { STATE_ALTERNATE, STATE_ERROR, STATE_NO_WRITE } from '../table/mapping-table.js';
import type { Attachments } from './attachments.js';
import type { SegmentIo } from './segment-io.js';
import { isMapped, type Disk, type Store } from './store.js';

export interface MigrationProgress { disk: string; to: string; done: number; total: number; moved: number }

const TIMEOUT_MS = 60_000;

export class Migrator {
  private readonly running = new Map<number, Promise<MigrationProgress>>();

  constructor(private readonly store: Store, private readonly att: Attachments, private readonly io: SegmentIo, private readonly log: (m: string) => void) {}

  /** Starts (or joins) the migration of a disk; progress is reported per segment moved and per chunk examined. */
  async migrate(name: string, to: string, onProgress: (p: MigrationProgress) => void = () => {}): Promise<MigrationProgress> {
    const { disk, to: c } = await this.store.cow.startMigration(name, to);
    return this.run(disk, c.id, c.name, onProgress);
  }

  /** Resumes the migrations a previous controller left unfinished. */
  async resumeAll(): Promise<void> {
    const containers = await this.store.listContainers();
    for (const m of await this.store.cow.migrations()) {
      const disk = await this.store.diskById(m.diskId);
      const c = containers.find((x) => x.id === m.to);
      if (!disk || !c) continue;
      this.log(`resuming the migration of ${disk.name} to ${c.name}`);
      void this.run(disk, c.id, c.name, () => {}).catch((err: Error) => this.log(`migration of ${disk.name}: ${err.message}`));
    }
  }

  private run(disk: Disk, to: number, toName: string, onProgress: (p: MigrationProgress) => void): Promise<MigrationProgress> {
    const current = this.running.get(disk.id);
    if (current) return current;
    const job = this.loop(disk, to, toName, onProgress).finally(() => this.running.delete(disk.id));
    this.running.set(disk.id, job);
    return job;
  }

  private async loop(disk: Disk, to: number, toName: string, onProgress: (p: MigrationProgress) => void): Promise<MigrationProgress> {
    const p: MigrationProgress = { disk: disk.name, to: toName, done: 0, total: disk.segments, moved: 0 };
    // A fault that chose its segment on the old container before startMigration committed may still be
    // staging it (I/O between two transactions, under the disk's lock). Waiting the lock out once means every
    // mapping the scan below can miss was allocated after the preference changed, so on `to`.
    await this.att.withDisk(disk.id, async () => {});
    // Only stored chunks can map anything (an absent one is all fill state): the scan costs what the disk
    // holds, not its size, and yields between chunks so pings and faults are answered meanwhile.
    for await (const { chunk, data } of this.store.tables.chunks(disk)) { // a guide only: each segment is re-read under the lock
      const first = chunk * CHUNK_ENTRIES;
      for (let k = 0; k < data.length / ENTRY_BYTES; k++) {
        const guess = decodeEntry(data, k);
        if (isMapped(guess) && guess.container !== to && !(guess.states & STATE_ERROR)) {
          if (await this.moveOne(disk, first + k, to)) {
            p.moved++;
            p.done = first + k + 1;
            onProgress(p);
          }
        }
      }
      p.done = first + data.length / ENTRY_BYTES;
      onProgress(p);
    }
    p.done = disk.segments;
    onProgress(p);
    await this.store.cow.finishMigration(disk.id);
    this.log(`migrated ${disk.name} to ${toName}: ${p.moved} segment(s) moved`);
    return p;
  }

  private async moveOne(disk: Disk, segment: number, to: number): Promise<boolean> {
    return this.att.withDisk(disk.id, async () => {
      // An Alternate segment moves as one: fold it first (a fault cannot make a new one while we hold the lock).
      const [now] = await this.store.tables.getEntries(disk, segment, 1);
      if (now.states & STATE_ALTERNATE) await this.att.foldLocked(disk, segment, this.io);
      await this.att.toHolders(disk, (conn) => agentRequest(conn, 'table.states',
        { diskId: disk.id, first: segment, count: 1, bits: STATE_NO_WRITE, set: true, blocking: true }, { timeoutMs: TIMEOUT_MS }));
      const entry = await this.store.cow.migrateSegment(disk, segment, to, (from, dst, length) => this.io.copy(from, dst, length));
      failpoint('migrate.remapped');
      // The agents get the stored entry either way: it also takes back the No-write set above.
      const bytes = Buffer.alloc(ENTRY_BYTES);
      encodeEntry(bytes, 0, entry ?? (await this.store.tables.getEntries(disk, segment, 1))[0]);
      // Blocking: reads planned with the old entry finish before its segment can be handed out again.
      await this.att.toHolders(disk, (conn) => agentRequest(conn, 'table.set', { diskId: disk.id, first: segment, blocking: true }, { payload: bytes, timeoutMs: TIMEOUT_MS }));
      return entry !== null;
    });
  }
}
