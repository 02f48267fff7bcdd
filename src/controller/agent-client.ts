// The requests the controller sends to agents: devices, containers and tables to one agent, and changes to
// every agent that may map a disk (toHolders). It decides nothing and takes no lock: its callers order the
// calls and hold the disk's lock where a method says so (attachments.ts, fault-policy.ts).
import type { Connection } from '../protocol/connection.js';
import { agentRequest, type Claim, type ContainerError, type ContainerRef, type DeviceInfo, type Empty } from '../protocol/agent-ops.js';
import type { Alternate } from '../protocol/fault-answer.js';
import { ENTRY_BYTES, encodeEntry } from '../table/entry-codec.js';
import { STATE_ALTERNATE, type Entry } from '../table/mapping-table.js';
import { alternateOf, listAlternates } from './partial.js';
import type { AgentRegistry } from './agents.js';
import type { Disk, Store } from './store.js';

/** Starting or recovering a device under emulation can take a while; a table command should not. */
const DEVICE_TIMEOUT_MS = 120_000;
const TABLE_TIMEOUT_MS = 60_000;
/** 16 MiB per table.set: a 1 TiB disk of 1 MiB segments is one message. */
const LOAD_ENTRIES = 1 << 20;

export class AgentClient {
  constructor(private readonly store: Store, private readonly agents: AgentRegistry, private readonly log: (m: string) => void) {}

  startDevice(conn: Connection, diskId: number, queues: number, depth: number): Promise<DeviceInfo> {
    return agentRequest(conn, 'device.start', { diskId, queues, depth }, { timeoutMs: DEVICE_TIMEOUT_MS });
  }

  recoverDevice(conn: Connection, diskId: number, devId: number): Promise<DeviceInfo> {
    return agentRequest(conn, 'device.recover', { diskId, devId }, { timeoutMs: DEVICE_TIMEOUT_MS });
  }

  stopDevice(conn: Connection, diskId: number): Promise<{ claims: Claim[] }> {
    return agentRequest(conn, 'device.stop', { diskId }, { timeoutMs: DEVICE_TIMEOUT_MS });
  }

  deleteTable(conn: Connection, diskId: number): Promise<Empty> {
    return agentRequest(conn, 'table.delete', { diskId });
  }

  /** The containers as one host reaches them; the agent answers which it holds in Error. */
  setContainers(conn: Connection, containers: ContainerRef[]): Promise<{ errors: ContainerError[] }> {
    return agentRequest(conn, 'containers.set', { containers }, { timeoutMs: TABLE_TIMEOUT_MS });
  }

  async createTable(conn: Connection, disk: Disk): Promise<void> {
    await agentRequest(conn, 'table.create', { diskId: disk.id, name: disk.name, size: disk.size, segmentSize: disk.segmentSize, readOnly: disk.readOnly },
      { timeoutMs: TABLE_TIMEOUT_MS });
    await this.loadTable(conn, disk, false);
  }

  /** The whole table in bulk, in messages of LOAD_ENTRIES entries (frames are capped at 64 MiB). */
  async loadTable(conn: Connection, disk: Disk, blocking: boolean): Promise<void> {
    // Lazily committed fault mappings become durable first (cheap when none are pending): the host may be
    // another machine, whose agent would outlive a power cut here (see thin-batch.ts).
    await this.store.db.sync();
    // Alternate records before the entries naming them (see alternates.ts).
    for (const a of await listAlternates(this.store, disk.id)) await this.sendAlternate(conn, disk, a);
    // Piece by piece from the store: the controller never holds more than one message of a big table.
    for (let first = 0; first < disk.segments; first += LOAD_ENTRIES) {
      const end = Math.min(disk.segments, first + LOAD_ENTRIES);
      const piece = await this.store.tables.readRange(disk, first, end - first);
      // The blocking flag on the last piece: the barrier then covers every piece before it too.
      await agentRequest(conn, 'table.set', { diskId: disk.id, first, blocking: blocking && end === disk.segments },
        { payload: piece, timeoutMs: TABLE_TIMEOUT_MS });
    }
  }

  /**
   * Sends a change to every agent that may map the disk; resolves once each has applied it (and, blocking,
   * drained older I/O) or has certainly lost its lease. The caller holds the disk's lock.
   */
  async toHolders(disk: Disk, send: (conn: Connection) => Promise<unknown>): Promise<void> {
    const atts = await this.store.attachments({ diskId: disk.id });
    await Promise.all(atts.map(async (a) => {
      for (;;) {
        const link = await this.agents.reachableOrExpired(a.hostId);
        if (!link) return; // its lease ran out: it reloads everything when it comes back
        try {
          await send(link.conn);
          return;
        } catch (err) {
          if (link.conn.isOpen) throw err;
        }
      }
    }));
  }

  /** Sends the stored entry (and its alternate) to every holder of the disk; the caller holds its lock. */
  async pushStored(disk: Disk, segment: number, blocking: boolean): Promise<void> {
    const [entry] = await this.store.tables.getEntries(disk, segment, 1);
    const alternate = entry.states & STATE_ALTERNATE ? await alternateOf(this.store, disk.id, segment) : undefined;
    await this.toHolders(disk, (conn) => this.sendEntry(conn, disk, segment, entry, alternate, blocking));
  }

  /** Encoded entries from `first` to every holder, with the blocking flag unless told; the caller holds the disk's lock. */
  pushEncoded(disk: Disk, first: number, bytes: Buffer, blocking = true): Promise<void> {
    return this.toHolders(disk, (conn) => agentRequest(conn, 'table.set', { diskId: disk.id, first, blocking }, { payload: bytes, timeoutMs: TABLE_TIMEOUT_MS }));
  }

  /** State bits set or cleared over a range on every holder, with the blocking flag; the caller holds the disk's lock. */
  pushStates(disk: Disk, first: number, count: number, bits: number, set: boolean): Promise<void> {
    return this.toHolders(disk, (conn) => agentRequest(conn, 'table.states', { diskId: disk.id, first, count, bits, set, blocking: true }, { timeoutMs: TABLE_TIMEOUT_MS }));
  }

  /** The whole table to every holder, with the blocking flag; the caller holds the disk's lock. */
  pushTable(disk: Disk): Promise<void> {
    return this.toHolders(disk, (conn) => this.loadTable(conn, disk, true));
  }

  async sendEntry(conn: Connection, disk: Disk, segment: number, entry: Entry, alternate: Alternate | undefined, blocking: boolean): Promise<void> {
    if (alternate) await this.sendAlternate(conn, disk, alternate);
    const bytes = Buffer.alloc(ENTRY_BYTES);
    encodeEntry(bytes, 0, entry);
    await agentRequest(conn, 'table.set', { diskId: disk.id, first: segment, blocking }, { payload: bytes, timeoutMs: TABLE_TIMEOUT_MS });
  }

  private async sendAlternate(conn: Connection, disk: Disk, a: Alternate): Promise<void> {
    await agentRequest(conn, 'table.alt', { diskId: disk.id, slot: a.slot, container: a.container, offset: a.offset }, { payload: a.bitmap, timeoutMs: TABLE_TIMEOUT_MS });
  }

  /**
   * A hold ended: writes parked on its 'delay' answers fault again now, not at the end of their delay. To
   * every connected agent (a fault's agent need not be a recorded holder yet, during an attach); sent after
   * the delay answers (the caller holds the disk's lock, which those answers were computed under). Best
   * effort: an agent that loses its link ends its delays itself, and a delay ends at its time anyway.
   */
  async cancelDelays(disk: Disk, first: number, count: number): Promise<void> {
    await Promise.all(this.agents.list().map((l) => agentRequest(l.conn, 'fault.cancel', { diskId: disk.id, first, count }, { timeoutMs: TABLE_TIMEOUT_MS })
      .catch((err: Error) => this.log(`fault.cancel to ${l.hostId}: ${err.message}`))));
  }
}
