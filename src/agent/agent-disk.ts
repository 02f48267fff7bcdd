// One disk as an agent holds it: the volatile table (a SharedArrayBuffer shared with the queue workers), the
// ublk device serving it once started, and the forwarding of its map faults to the controller. Runs on the
// agent's main thread. Table changes are applied synchronously where the command or answer is received
// (see Agent), never after an await, so they take effect in the order the controller sent them.
import { SYNC_DURABLE, SYNC_MAPPED, SYNC_WORDS, dirtyWords, genReached, markDirty } from '../io/translator.js';
import { FAULT_DISCARD, FAULT_READ, FAULT_WRITE } from '../protocol/fault-ops.js';
import { VdiskError } from '../errors.js';
import { MappingTable, STATE_ERROR, STATE_INVALID, STATE_ZERO } from '../table/mapping-table.js';
import { ENTRY_BYTES } from '../table/entry-codec.js';
import { UBLK_F_USER_RECOVERY, UBLK_F_USER_RECOVERY_REISSUE, type UblkControlDevice } from '../ublk/control.js';
import { UblkDevice, type DeviceOptions, type Fault } from '../ublk/device.js';
import { MAX_CONTAINERS, type AgentContainers } from './containers.js';
import type { Alternate, FaultAnswer } from '../protocol/fault-answer.js';
import { linkStableName, unlinkStableName } from './stable-name.js';
import type { GrantPool } from './grant-pool.js';

export interface DiskShape { diskId: number; name: string; size: number; segmentSize: number; readOnly?: boolean }

/** The controller's answer to a fault (see DESIGN.md, "The mapping table"). */
export type { Alternate, FaultAnswer } from '../protocol/fault-answer.js';

/** Sends one fault to the controller, waiting for a connection as long as it takes; installs via onAnswer. */
export type FaultSender = (disk: AgentDisk, f: Fault, onAnswer: (a: FaultAnswer) => void) => Promise<FaultAnswer>;

const OP_NAMES: Record<number, string> = { [FAULT_READ]: 'read', [FAULT_WRITE]: 'write', [FAULT_DISCARD]: 'discard' };

/** Tells the controller a container failed under segments [first, first + count) of a disk. */
export type IoErrorSender = (disk: AgentDisk, first: number, count: number) => void;

/**
 * Tells the controller a sequential writer entered segment `from` of a disk and the first Zero segment past
 * it is `segment` (Translator.aheadHint); resolves when the controller has answered or it could not be sent.
 */
export type AheadSender = (disk: AgentDisk, segment: number, from: number) => Promise<void>;

/** Asks the controller to make every mapping it sent so far durable (disk.sync): 0, or -errno when it cannot. */
export type SyncSender = (disk: AgentDisk) => Promise<number>;

interface Delay { segment: number; end(cancelled: boolean): void }

export class AgentDisk {
  readonly table: MappingTable;
  device: UblkDevice | undefined;
  /** The start or recovery under way, if any: stop() waits for it. */
  private opening: Promise<UblkDevice> | undefined;
  /**
   * The containers a FLUSH of this disk reaches: every one its table has mapped since this agent created it
   * (marked here, before the entry is usable) and every one its queues write (marked by the translator).
   * Shared with the device's queues; bits are only ever set.
   */
  readonly dirty = new Int32Array(new SharedArrayBuffer(dirtyWords(MAX_CONTAINERS) * 4));
  /**
   * The sync words the queues read (Translator's SYNC_*): bumped before anything the controller sent is
   * installed, so a FLUSH or FUA write that may rely on it waits for a disk.sync first.
   */
  readonly sync = new Int32Array(new SharedArrayBuffer(SYNC_WORDS * 4));
  /** Faults parked on a 'delay' answer: each waits for its time or for the controller's cancel of its segment. */
  private readonly delays = new Set<Delay>();
  /** Ahead hints sent and not yet answered, by segment: one each however many queues see it. */
  private readonly aheadInFlight = new Set<number>();
  /** How parked faults ended so far: by a cancel (or a lost link) or at their time. */
  readonly delayEnds = { cancelled: 0, expired: 0 };
  /** Zeroed segments the controller granted for first writes, and their claims (set by the agent). */
  grants: GrantPool | undefined;

  constructor(
    readonly shape: DiskShape,
    private readonly containers: AgentContainers,
    private readonly sendFault: FaultSender,
    private readonly sendIoError: IoErrorSender = () => {},
    private readonly log: (m: string) => void = () => {},
    private readonly sendAhead: AheadSender = async () => {},
    private readonly sendSync: SyncSender = async () => 0,
  ) {
    this.table = MappingTable.create({ segments: Math.ceil(shape.size / shape.segmentSize), segmentSize: shape.segmentSize });
  }

  get id(): number {
    return this.shape.diskId;
  }

  private options(queues: number, depth: number): DeviceOptions {
    return {
      queues, depth, sizeBytes: this.shape.size, table: this.table,
      containerFds: this.containers.fds.buffer as SharedArrayBuffer, dirty: this.dirty.buffer as SharedArrayBuffer,
      flags: UBLK_F_USER_RECOVERY | UBLK_F_USER_RECOVERY_REISSUE, readOnly: this.shape.readOnly,
      onFault: (f) => this.fault(f),
      onIoError: (first, count) => this.reportIoError(first, count),
      onAhead: (segment, from) => this.ahead(segment, from),
      sync: this.sync.buffer as SharedArrayBuffer,
      onSync: () => this.syncMappings(),
      ...(this.grants ? { claims: this.grants.ring.buffer, onClaimed: () => this.grants?.claimed() } : {}),
    };
  }

  start(control: UblkControlDevice, queues: number, depth: number): Promise<UblkDevice> {
    return this.open(() => UblkDevice.start(control, this.options(queues, depth)));
  }

  /** Takes over the quiesced device a previous agent left (ublk user recovery). */
  recover(control: UblkControlDevice, devId: number): Promise<UblkDevice> {
    return this.open(async () => {
      const info = await control.getDevInfo(devId);
      return UblkDevice.recover(control, devId, this.options(info.nrHwQueues, info.queueDepth));
    });
  }

  /** Whether a device serves this disk or is being started or recovered for it. */
  get busy(): boolean {
    return this.device !== undefined || this.opening !== undefined;
  }

  private async open(make: () => Promise<UblkDevice>): Promise<UblkDevice> {
    if (this.device) throw new VdiskError(`disk ${this.shape.name} is already served by ${this.device.path}`, { code: 'EBUSY' });
    if (this.opening) throw new VdiskError(`a device for disk ${this.shape.name} is being started`, { code: 'EBUSY' });
    const p = make();
    this.opening = p;
    try {
      this.device = await p;
    } finally {
      this.opening = undefined;
    }
    linkStableName(this.shape.name, this.device.path, this.log);
    return this.device;
  }

  async stop(): Promise<void> {
    // A start or recovery under way (START_DEV may wait on the partition scan's reads, recovery on the old
    // server's exit) brings a device this stop must not leave behind, orphaned and live.
    await this.opening?.catch(() => {});
    const dev = this.device;
    this.device = undefined;
    if (dev) unlinkStableName(this.shape.name, dev.path);
    await dev?.stop();
  }

  /** The controller's set entries: bytes in the stored layout (16 bytes per entry). */
  setEntries(first: number, bytes: Uint8Array): void {
    this.mapped();
    this.markMapped(bytes);
    this.table.loadBytes(first, bytes);
  }

  /**
   * Marks the containers these entries map as ones a FLUSH must reach, before the entries can be used: after
   * an agent restart they also hold what the previous incarnation wrote and acknowledged but never flushed.
   */
  private markMapped(bytes: Uint8Array): void {
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    let last = -1;
    for (let o = 4; o + 4 <= bytes.byteLength; o += ENTRY_BYTES) {
      const w = view.getUint32(o, true);
      if ((w & (STATE_INVALID | STATE_ZERO)) !== 0 || w >>> 8 === last) continue;
      last = w >>> 8;
      this.markDirty(last);
    }
  }

  private markDirty(container: number): void {
    markDirty(this.dirty, container);
  }

  /** Before installing what the controller sent: it may not be durable yet (see sync). */
  private mapped(): void {
    Atomics.add(this.sync, SYNC_MAPPED, 1);
  }

  /** The controller's state change over a range of entries. */
  changeStates(first: number, count: number, bits: number, set: boolean): void {
    this.mapped();
    this.table.changeStates(first, count, bits, set);
  }

  /**
   * The device's sync handler: one disk.sync covering every generation installed before it was sent, then
   * that generation is stored as durable. Nothing new since the last one: no message.
   */
  private async syncMappings(): Promise<number> {
    const gen = Atomics.load(this.sync, SYNC_MAPPED);
    if (genReached(Atomics.load(this.sync, SYNC_DURABLE), gen)) return 0;
    const result = await this.sendSync(this);
    if (result < 0) return result;
    if (!genReached(Atomics.load(this.sync, SYNC_DURABLE), gen)) Atomics.store(this.sync, SYNC_DURABLE, gen);
    return 0;
  }

  /** The controller's alternate location for a slot (before any entry naming it, or more bits for it). */
  setAlternate(a: Alternate): void {
    if (!this.table.alternates) throw new RangeError('this table has no alternate locations');
    this.mapped();
    this.markDirty(a.container);
    this.table.alternates.set(a.slot, a.container, a.offset, a.bitmap);
  }

  /** Lease expired: nothing cached may be used until the controller reloads the table. */
  suspend(): void {
    this.table.changeStates(0, this.table.segments, STATE_INVALID, true);
  }

  /** Completes once every request started before the change just applied has completed (blocking flag). */
  async barrier(timeoutMs?: number): Promise<void> {
    await this.device?.barrier(timeoutMs);
  }

  /**
   * One parked request's fault (the device calls it): asks the controller, installs the answer, and resolves
   * with 0 to retry the request (it faults again if the table still cannot serve it) or -errno to fail it.
   */
  async fault(f: Fault): Promise<number> {
    // While a fault is out, the queues do not claim its segment (see ClaimRing.faultOut): its answer must not
    // land on a claimed entry. Counted before the entry is read again below, so a claim made before is seen
    // there; uncounted once the answer is installed (a delay's wait is not a fault out).
    const ring = this.grants?.ring;
    const token = ring?.faultOut(f.segment);
    let out = ring !== undefined;
    const installed = () => {
      if (out) ring?.faultIn(token!);
      out = false;
    };
    try {
      // The entry changed since the queue saw it (a claim for the other half of the same write, an answer, a
      // push): the request is planned again with what is there now. Sent on, a stale write fault would have
      // the controller map the segment anew over a claim it has not heard of yet, and the claimed data is lost.
      if (f.segment < this.table.segments && this.table.load(f.segment) !== f.states) return 0;
      if (f.op === FAULT_WRITE && this.claim(f.segment)) return 0;
      let parked: Promise<void> | undefined;
      const answer = await this.sendFault(this, f, (a) => {
        this.install(f, a);
        // Parked as the answer is decoded: a cancel the controller sends right after it finds the fault parked.
        if (a.action === 'delay') parked = this.park(f.segment, a.ms);
      });
      installed();
      if (answer.action === 'entry') return 0;
      if (answer.action === 'error') return -answer.errno;
      await (parked ?? this.park(f.segment, answer.ms));
      return 0;
    } finally {
      installed();
    }
  }

  /**
   * A first write into a Zero entry takes a granted segment, if one is held: its claim is in the claims file
   * before the entry is installed (so before the write can complete), and the entry counts as mapped for the
   * next FLUSH, whose disk.sync carries the claim. The entry is read again here, on the main thread where
   * every change is applied: a change since the worker saw Zero (a snapshot's No-write) wins.
   */
  private claim(segment: number): boolean {
    if (!this.grants || this.table.load(segment) !== STATE_ZERO) return false;
    const g = this.grants.take(segment);
    if (!g) return false;
    this.mapped();
    this.markDirty(g.container);
    this.table.setRange(segment, 1, { states: 0, container: g.container, offset: g.offset, alt: 0 });
    return true;
  }

  /** A queue's ahead hint (see AheadSender); the controller pushes what it maps, so the reply carries nothing to install. */
  private ahead(segment: number, from: number): void {
    // Grants serve sequential writers too: windows mapped ahead would only compete for the zeroed frontier.
    if (this.aheadInFlight.has(segment) || this.grants?.active) return;
    this.aheadInFlight.add(segment);
    void this.sendAhead(this, segment, from).finally(() => this.aheadInFlight.delete(segment));
  }

  /** Faults parked on a delay right now. */
  get delayed(): number {
    return this.delays.size;
  }

  /** Ends the delays of faults on segments [first, first + count) now: their hold is over. */
  cancelDelays(first: number, count: number): void {
    for (const d of [...this.delays]) {
      if (d.segment >= first && d.segment < first + count) d.end(true);
    }
  }

  private park(segment: number, ms: number): Promise<void> {
    return new Promise((resolve) => {
      const d: Delay = {
        segment,
        end: (cancelled) => {
          if (!this.delays.delete(d)) return;
          clearTimeout(timer);
          this.delayEnds[cancelled ? 'cancelled' : 'expired']++;
          resolve();
        },
      };
      const timer = setTimeout(() => d.end(false), ms);
      this.delays.add(d);
    });
  }

  private reportIoError(first: number, count: number): void {
    this.sendIoError(this, first, count);
  }

  /** Applies an answer; runs synchronously as the reply is decoded. */
  private install(f: Fault, a: FaultAnswer): void {
    if (a.action !== 'delay') this.mapped();
    if (a.action === 'entry') {
      if (a.alternate) this.setAlternate(a.alternate);
      if ((a.entry.states & (STATE_INVALID | STATE_ZERO)) === 0) this.markDirty(a.entry.container);
      this.table.setRange(f.segment, 1, a.entry);
    }
    else if (a.action === 'error' && a.setError) this.table.changeStates(f.segment, 1, STATE_ERROR, true);
  }

  describe(f: Fault): string {
    return `${OP_NAMES[f.op] ?? f.op} fault on ${this.shape.name} segment ${f.segment}`;
  }
}
