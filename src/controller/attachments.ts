// Attaching disks to agents: attach (create the table, load it in bulk, start the device), detach, reconcile
// an agent that (re)connects (reload what it holds, recover the quiesced devices of one that restarted), and
// table changes after a container fails. Every table flow of a disk runs under that disk's lock, which this
// class owns (see util/mutex.ts for why). Requests to agents are agent-client.ts's; faults, copy-on-write,
// folds, snapshots and holds are fault-policy.ts's, reached through this class so callers see one API.
import type { ProgressFn } from './progress.js';
import { VdiskError } from '../errors.js';
import type { Connection } from '../protocol/connection.js';
import type { Claim } from '../protocol/agent-ops.js';
import type { FaultAnswer } from '../protocol/fault-answer.js';
import { ENTRY_BYTES, encodeEntry } from '../table/entry-codec.js';
import { STATE_ERROR, STATE_INVALID, STATE_ZERO } from '../table/mapping-table.js';
import { KeyedMutex } from '../util/mutex.js';
import type { FaultRequest } from './faults.js';
import type { SegmentIo } from './segment-io.js';
import type { ThinBatcher } from './thin-batch.js';
import type { CowBatcher } from './cow-batch.js';
import { failpoint } from '../util/failpoints.js';
import { AgentClient } from './agent-client.js';
import { FaultPolicy, type DiskLocks } from './fault-policy.js';
import type { AgentLink, AgentRegistry } from './agents.js';
import { ContainerHealth, pathOn } from './container-labels.js';
import { Grants } from './grants.js';
import type { Attachment, Disk, Store } from './store.js';

export const DEFAULT_QUEUES = 1;
export const DEFAULT_DEPTH = 128;

export interface AttachOptions { queues?: number; depth?: number }

export class Attachments implements DiskLocks {
  readonly locks = new KeyedMutex<number>();
  /**
   * Attaches and reconciliations in progress, by "diskId/hostId", with the link each runs on, settled when they
   * end: reconciliation leaves its own link's attach alone and waits for an earlier link's, and a detach waits
   * for the device either may still bring.
   */
  private readonly opening = new Map<string, { conn: Connection; done: Promise<void> }>();
  /** The containers each host's agent holds in Error. */
  readonly health = new ContainerHealth();
  private readonly client: AgentClient;
  private readonly policy: FaultPolicy;
  /** Zeroed segments granted to a disk's sole holder, and its claims (revoked by every flow under withDisk). */
  readonly grants: Grants;

  constructor(private readonly store: Store, private readonly agents: AgentRegistry, private readonly log: (m: string) => void) {
    this.client = new AgentClient(store, agents, log);
    this.policy = new FaultPolicy(store, this.client, this, log);
    this.grants = new Grants(store, agents, this.locks, (h) => this.policy.isRemote(h), log);
  }

  /** Group commit of first writes into thin segments (made on the first such fault: it needs the SegmentIo). */
  get thin(): ThinBatcher | undefined {
    return this.policy.thin;
  }

  /** Group commit of redirect-on-write faults (made on the first such fault). */
  get cow(): CowBatcher | undefined {
    return this.policy.cow;
  }

  /** Reads the persisted holds; the controller calls it before it serves any fault. */
  loadHolds(): Promise<void> {
    return this.policy.loadHolds();
  }

  /**
   * Runs fn under the disk's lock. The yield first lets replies whose handlers already finished (fault answers
   * computed under this lock) reach the socket, so they never travel after a change that follows them. Then
   * the disk's grants are revoked: fn sees every write its holder claimed, and nobody claims until it ends.
   */
  withDisk<T>(diskId: number, fn: () => Promise<T>): Promise<T> {
    return this.locks.run(diskId, async () => {
      await new Promise((resolve) => setImmediate(resolve));
      const disk = await this.store.diskById(diskId);
      if (disk) await this.grants.revokeLocked(disk);
      return fn();
    });
  }

  reclaimGrants(disk: Disk): Promise<number> {
    return this.grants.revokeLocked(disk);
  }

  async attach(name: string, hostId: string, o: AttachOptions): Promise<{ device: string; devId: number; hostId: string; queues: number }> {
    const disk = await this.store.disk(name);
    const link = this.agents.get(hostId);
    if (!link) throw new VdiskError(`no agent for host ${hostId} is connected (start one: vdisk agent start --host-id ${hostId})`, { code: 'ENOAGENT' });
    const [existing] = await this.store.attachments({ diskId: disk.id, hostId });
    if (existing && existing.devId !== null) {
      throw new VdiskError(`disk ${name} is already attached on ${hostId} as /dev/ublkb${existing.devId}`, { code: 'EEXIST' });
    }
    const key = `${disk.id}/${hostId}`;
    if (this.opening.has(key)) throw new VdiskError(`disk ${name} is being attached on ${hostId}`, { code: 'EBUSY' });
    return this.opened(key, link.conn, async () => {
      // Recorded before the device exists: a crash in between leaves a record that reconciliation completes.
      await this.store.putAttachment(disk.id, hostId, null);
      failpoint('attach.recorded');
      try {
        const r = await this.open(link, disk, o);
        await this.store.putAttachment(disk.id, hostId, r.devId);
        return { device: `/dev/ublkb${r.devId}`, devId: r.devId, hostId, queues: r.queues };
      } catch (err) {
        await this.client.deleteTable(link.conn, disk.id).catch(() => {});
        await this.store.removeAttachment(disk.id, hostId);
        throw err;
      }
    });
  }

  /** Runs an attach or a reconciliation of one disk on one host, registered in `opening` until it ends. */
  private opened<T>(key: string, conn: Connection, fn: () => Promise<T>): Promise<T> {
    const p = fn();
    const entry = { conn, done: p.then(() => {}, () => {}) };
    this.opening.set(key, entry);
    void entry.done.then(() => {
      if (this.opening.get(key) === entry) this.opening.delete(key);
    });
    return p;
  }

  async detach(name: string, hostId: string | undefined, force: boolean): Promise<{ detached: string[] }> {
    const disk = await this.store.disk(name);
    const atts = await this.store.attachments({ diskId: disk.id, hostId });
    if (!atts.length) throw new VdiskError(`disk ${name} is not attached${hostId ? ` on ${hostId}` : ''}`, { code: 'ENOENT' });
    const done: string[] = [];
    for (const a of atts) {
      // An attach or a reconciliation still starting or recovering the device first: stopping before it ends
      // would leave the device it brings live, with no table or attachment to answer for it.
      const opening = this.opening.get(`${disk.id}/${a.hostId}`);
      if (opening) {
        this.log(`detach of ${name} on ${a.hostId} waits for its attach or recovery to end`);
        await opening.done;
      }
      const link = this.agents.get(a.hostId);
      let claims: Claim[] = [];
      if (link) {
        claims = (await this.client.stopDevice(link.conn, disk.id).catch((err: VdiskError) => {
          if (err.code !== 'ENOENT') throw err; // ENOENT: the agent no longer holds it
          return { claims: [] };
        })).claims;
      } else if (!force) {
        throw new VdiskError(`the agent of ${a.hostId} is not connected, so its device cannot be stopped; ` +
          'start it (it recovers the device) or use --force to forget the attachment', { code: 'EAGAIN' });
      }
      await this.store.removeAttachment(disk.id, a.hostId);
      // The device is drained: its last claims map what it wrote, and no request of its can take more grants.
      await this.grants.release(disk, a.hostId, claims, !link);
      done.push(a.hostId);
    }
    return { detached: done };
  }

  /** An agent registered: reload what it holds, recover or start what it should hold, stop what it should not. */
  async reconcile(link: AgentLink, held: Array<{ diskId: number; devId: number | null }>): Promise<void> {
    await this.sendContainers(link);
    const atts = await this.store.attachments({ hostId: link.hostId });
    for (const a0 of atts) {
      const key = `${a0.diskId}/${a0.hostId}`;
      const prev = this.opening.get(key);
      if (prev?.conn === link.conn) continue; // this link's own attach: it brings the device
      if (prev) {
        // One an earlier link of this host started (an agent that died mid-recovery): skipped, it would leave
        // the device quiesced when it fails on its dead link, with I/O held forever. Waited for, then redone.
        this.log(`reconciling ${a0.disk} on ${a0.hostId} waits for the attach or recovery an earlier link started`);
        await prev.done;
        if (this.agents.get(link.hostId)?.conn !== link.conn) return; // a newer link reconciles instead
      }
      const [a] = await this.store.attachments({ diskId: a0.diskId, hostId: a0.hostId });
      if (!a || this.opening.has(key)) continue;
      try {
        await this.opened(key, link.conn, () => this.reconcileOne(link, a, held.find((h) => h.diskId === a.diskId)));
      } catch (err) {
        this.log(`reconciling ${a.disk} on ${a.hostId}: ${(err as Error).message}`);
      }
    }
    for (const h of held) {
      if (atts.some((a) => a.diskId === h.diskId)) continue;
      this.log(`${link.hostId} serves disk ${h.diskId}, which is not attached there: stopping it`);
      await this.client.stopDevice(link.conn, h.diskId).catch(() => {});
    }
  }

  private async reconcileOne(link: AgentLink, a: Attachment, held: { devId: number | null } | undefined): Promise<void> {
    const disk = await this.store.diskById(a.diskId);
    if (!disk) return;
    if (held && held.devId !== null) {
      await this.withDisk(disk.id, () => this.client.loadTable(link.conn, disk, false));
      return;
    }
    if (a.devId !== null) {
      try {
        await this.withDisk(disk.id, () => this.client.createTable(link.conn, disk));
        await this.client.recoverDevice(link.conn, disk.id, a.devId);
        this.log(`${link.hostId}: recovered ${a.disk} on /dev/ublkb${a.devId}`);
        return;
      } catch (err) {
        // The agent died during it: its successor's registration reconciles again (nothing to start here).
        if ((err as VdiskError).code === 'ECONNRESET') throw err;
        // The device is gone (host reboot), or the kernel cannot hand it over any more (the agent deleted it,
        // ENOTRECOVERABLE): serve the disk on a new one.
        this.log(`${link.hostId}: cannot recover /dev/ublkb${a.devId} for ${a.disk} (${(err as Error).message}); starting a new device`);
        await this.client.deleteTable(link.conn, disk.id).catch(() => {});
      }
    }
    const r = await this.open(link, disk, {});
    await this.store.putAttachment(disk.id, a.hostId, r.devId);
  }

  /** Table in bulk, then the device. START_DEV reads the partition table, so the lock is not held across it. */
  private async open(link: AgentLink, disk: Disk, o: AttachOptions): Promise<{ devId: number; queues: number }> {
    await this.sendContainers(link);
    await this.withDisk(disk.id, () => this.client.createTable(link.conn, disk));
    return this.client.startDevice(link.conn, disk.id, o.queues ?? DEFAULT_QUEUES, o.depth ?? DEFAULT_DEPTH);
  }

  /**
   * The containers as this host reaches them (its own path where it has one) with what their labels must say;
   * the agent answers which it holds in Error, and that is what `container ls` and `info` show.
   */
  async sendContainers(link: AgentLink): Promise<void> {
    const containers = (await this.store.listContainers()).filter((c) => !c.failed)
      .map((c) => ({ id: c.id, path: pathOn(c, link.hostId), ...(c.uuid === null ? {} : { uuid: c.uuid, size: c.size }) }));
    const { errors } = await this.client.setContainers(link.conn, containers);
    for (const e of errors) this.log(`${link.hostId}: container ${containers.find((c) => c.id === e.id)?.path ?? e.id} in Error there: ${e.problem}`);
    this.health.report(link.hostId, errors);
  }

  async broadcastContainers(): Promise<void> {
    await Promise.all(this.agents.list().map((l) => this.sendContainers(l).catch((err: Error) => this.log(`containers to ${l.hostId}: ${err.message}`))));
  }

  /** A change to every agent that may map the disk (see AgentClient.toHolders). The caller holds the disk's lock. */
  toHolders(disk: Disk, send: (conn: Connection) => Promise<unknown>): Promise<void> {
    return this.client.toHolders(disk, send);
  }

  /** A map fault from the agent on `from` (see FaultPolicy.fault). */
  fault(from: Connection, disk: Disk, f: FaultRequest, io: SegmentIo): Promise<FaultAnswer> {
    return this.policy.fault(from, disk, f, io);
  }

  /** A sequential writer's ahead hint (see ThinBatcher.hint): segments mapped ahead, 0 when declined. */
  faultAhead(disk: Disk, segment: number, writer: number): Promise<number> {
    return this.policy.thin?.hint(disk, segment, writer) ?? Promise.resolve(0);
  }

  /** Folds an Alternate segment (see FaultPolicy.fold); foldLocked when the caller holds the disk's lock. */
  fold(disk: Disk, segment: number, io: SegmentIo): Promise<boolean> {
    return this.policy.fold(disk, segment, io);
  }

  foldLocked(disk: Disk, segment: number, io: SegmentIo): Promise<boolean> {
    return this.policy.foldLocked(disk, segment, io);
  }

  /** Folds every Alternate segment of the disk (on request, and before a snapshot shares its table). */
  foldAll(disk: Disk, io: SegmentIo, progress?: ProgressFn): Promise<number> {
    return this.policy.foldAll(disk, io, progress);
  }

  /**
   * A container failed under entries [first, first + count): the mapped ones turn to Error, durably, then on
   * every holder (blocking: no request still uses the old entry when this returns). Returns how many changed.
   */
  async markIoError(disk: Disk, first: number, count: number): Promise<number> {
    return this.withDisk(disk.id, async () => {
      const entries = await this.store.tables.getEntries(disk, first, count);
      let changed = 0;
      const next = entries.map((e) => {
        if (e.states & (STATE_INVALID | STATE_ZERO | STATE_ERROR)) return e;
        changed++;
        return { ...e, states: e.states | STATE_ERROR };
      });
      if (!changed) return 0;
      await this.store.tables.setEntries(disk, first, next);
      const bytes = Buffer.alloc(count * ENTRY_BYTES);
      next.forEach((e, k) => encodeEntry(bytes, k, e));
      await this.client.pushEncoded(disk, first, bytes);
      return changed;
    });
  }

  /** Reloads the whole table on every holder, with the blocking flag (after container failure, for instance). */
  async pushTable(disk: Disk): Promise<void> {
    await this.withDisk(disk.id, () => this.client.pushTable(disk));
  }

  isHeld(diskId: number, segment: number): boolean {
    return this.policy.isHeld(diskId, segment);
  }

  /** A snapshot of the disk (see FaultPolicy.snapshot). */
  snapshot(diskName: string, snapName: string, io: SegmentIo): Promise<Disk> {
    return this.policy.snapshot(diskName, snapName, io);
  }

  /** Sets or clears state bits over a range, persistently and then on every holder with the blocking flag. */
  changeStates(disk: Disk, first: number, count: number, bits: number, set: boolean): Promise<void> {
    return this.policy.changeStates(disk, first, count, bits, set);
  }
}
