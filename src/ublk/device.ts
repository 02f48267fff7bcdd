// Lifecycle of one /dev/ublkbN: ADD_DEV, SET_PARAMS, open /dev/ublkcN, one long-lived piscina task per queue
// (each fetches its tags on its own thread), START_DEV once every queue is ready; stop is STOP_DEV, let the
// queues drain and exit, close the char device, DEL_DEV. Runs on the main thread; blocking control commands
// go through UblkControlDevice, which never blocks the event loop.
import fs from 'node:fs';
import { MessageChannel, type MessagePort } from 'node:worker_threads';
import { Piscina } from 'piscina';
import { VdiskError } from '../errors.js';
import { failpoint } from '../util/failpoints.js';
import { sleep } from '../util/sleep.js';
import { SYNC_DURABLE, dirtyWords, genReached, markDirty } from '../io/translator.js';
import { ioStatsBuffer, readIoStats, type IoCounts } from './io-stats.js';
import * as abi from '../native/abi.js';
import { addon } from '../native/addon.js';
import type { UblkParams, UblksrvCtrlDevInfo } from '../native/types.js';
import { STATE_ALTERNATE, STATE_INVALID, STATE_ZERO, type MappingTable } from '../table/mapping-table.js';
import {
  UBLK_F_CMD_IOCTL_ENCODE, UBLK_F_USER_RECOVERY, UBLK_S_DEV_LIVE, UBLK_S_DEV_QUIESCED, type UblkControlDevice,
} from './control.js';
import {
  CTL_CDEV, CTL_DRAINED, CTL_EPOCH, CTL_QUIT, ctlWords, epochAfter, epochReached, type DeviceMessage, type QueueMessage, type QueueTaskArgs, type QueueTaskResult,
} from './queue-worker.js';

const debug = process.env.VDISK_DEBUG ? (msg: string) => process.stderr.write(`vdisk[${process.pid}] ${msg}\n`) : () => {};

export const UBLK_ATTR_READ_ONLY = 1;
export const UBLK_ATTR_VOLATILE_CACHE = 4;
export const UBLK_ATTR_FUA = 8;

export interface DeviceOptions {
  queues: number;
  depth: number;
  maxIoBufBytes?: number;
  sizeBytes: number;
  table: MappingTable;
  /** container id -> fd, shared with the workers */
  containerFds: SharedArrayBuffer;
  /**
   * The dirty-container bitmap its queues share (see Translator): the containers a FLUSH must fdatasync. An
   * owner that installs entries marks their containers in it (AgentDisk); without one, the device starts
   * with the containers its table maps.
   */
  dirty?: SharedArrayBuffer;
  flags?: bigint;
  readOnly?: boolean;
  /**
   * Answers a map fault: a request the table cannot serve (Invalid, Zero or No-write for a write, ...).
   * Resolve 0 after installing a replacement entry (the request is retried), or a negative errno to fail
   * it. The request waits meanwhile (a delay is simply a later answer); other requests keep flowing.
   * Without a handler such requests fail with EIO at once.
   */
  onFault?: (f: Fault) => Promise<number>;
  /**
   * A sequential writer entered segment `from` and the first Zero segment past it is `segment`: where its
   * next window would start (a hint; nothing waits on it). Only with onFault.
   */
  onAhead?: (segment: number, from: number) => void;
  /**
   * The disk's sync words (Translator's SYNC_*) and what makes its mappings durable: resolves with 0 once it
   * has stored the generation now durable into SYNC_DURABLE, or with a negative errno that fails the waiting
   * FLUSHes and FUA writes. Both or neither; without them nothing waits for a sync.
   */
  sync?: SharedArrayBuffer;
  onSync?: () => Promise<number>;
  /**
   * The disk's granted segments (io/claim-ring.ts), which its queues claim for first writes into Zero
   * entries without a fault; onClaimed hears of each claim (nothing waits on it). Only with sync and onFault.
   */
  claims?: SharedArrayBuffer;
  onClaimed?: () => void;
  startTimeoutMs?: number;
  /** A request failed in its container: segments [first, first + count) hold data that could not be read or written. */
  onIoError?: (first: number, count: number) => void;
}

export function deviceParams(o: DeviceOptions): UblkParams {
  const maxIo = o.maxIoBufBytes ?? defaultMaxIoBufBytes(o.table.segmentSize);
  // Discards walk segment by segment, so bound them to a few segments per request.
  const maxDiscard = Math.min(0xffffffff, (8 * o.table.segmentSize) / 512);
  return {
    basic: {
      attrs: UBLK_ATTR_VOLATILE_CACHE | UBLK_ATTR_FUA | (o.readOnly ? UBLK_ATTR_READ_ONLY : 0),
      logicalBsShift: 9, physicalBsShift: 12, ioOptShift: 12, ioMinShift: 9,
      maxSectors: maxIo / 512, chunkSectors: 0, devSectors: o.sizeBytes / 512, virtBoundaryMask: 0,
    },
    discard: {
      discardAlignment: 0, discardGranularity: 4096, maxDiscardSectors: maxDiscard,
      maxWriteZeroesSectors: maxDiscard, maxDiscardSegments: 1,
    },
  };
}

/**
 * The largest request the kernel sends (max_sectors) unless told: 1 MiB for segments of 1 MiB or more, so a
 * 1 MiB write over a 1 MiB segment arrives whole (a copy-on-write claim takes one request within one
 * segment); 512 KiB for smaller ones, whose requests split into a piece per segment and must stay within a
 * tag's MAX_OPS_PER_TAG records (a 1 MiB request over 64 KiB segments mapped out of order is 17 pieces).
 * Tag buffers are mapped lazily: pages a queue never fills cost nothing.
 */
export function defaultMaxIoBufBytes(segmentSize: number): number {
  return segmentSize >= 1024 * 1024 ? 1024 * 1024 : 512 * 1024;
}

export interface Fault {
  /** FAULT_READ, FAULT_WRITE or FAULT_DISCARD (src/protocol/fault-ops.ts) */
  op: number;
  segment: number;
  states: number;
  /** The piece of the first request that faulted, within the segment (bytes). */
  offset: number;
  length: number;
}

function workerFile(): string {
  const self = new URL(import.meta.url);
  return new URL(self.pathname.endsWith('.ts') ? './queue-worker.ts' : './queue-worker.js', self).href;
}

/** Queue worker pools created and not yet destroyed, in this process (see UblkDevice.poolsAlive). */
let poolsAlive = 0;

export class UblkDevice {
  /**
   * Worker pools alive in this process: devices serving, starting, recovering or stopping. Their workers may
   * sit in io_uring_enter, where process.exit cannot join them: a process that exits with one alive must end
   * as kill -9 does (the devices quiesce for the next server) or it hangs.
   */
  static get poolsAlive(): number {
    return poolsAlive;
  }

  readonly path: string;
  /** Queues the kernel granted (it caps nr_hw_queues at the number of CPUs). */
  readonly queues: number;
  private stopped = false;

  private constructor(
    private readonly control: UblkControlDevice,
    readonly info: UblksrvCtrlDevInfo,
    private readonly cdevFd: number,
    private readonly pool: Piscina,
    private readonly tasks: Promise<QueueTaskResult>[],
    private readonly ctl: Int32Array,
    private readonly wakeFds: number[],
    private readonly ports: MessagePort[],
    private readonly io: SharedArrayBuffer,
  ) {
    this.path = `/dev/ublkb${info.devId}`;
    this.queues = info.nrHwQueues;
  }

  get devId(): number {
    return this.info.devId;
  }

  /** Requests and bytes served since this process started serving the device (a recovery starts at zero). */
  ioStats(): IoCounts {
    return readIoStats(this.io, this.queues);
  }

  static async start(control: UblkControlDevice, o: DeviceOptions): Promise<UblkDevice> {
    if (o.sizeBytes <= 0 || o.sizeBytes % 512 !== 0) throw new RangeError(`device size ${o.sizeBytes} is not a positive multiple of 512`);
    const maxIo = o.maxIoBufBytes ?? defaultMaxIoBufBytes(o.table.segmentSize);
    const info = await control.addDev({ nrHwQueues: o.queues, queueDepth: o.depth, maxIoBufBytes: maxIo, flags: o.flags ?? 0n });
    debug(`ADD_DEV -> dev ${info.devId}, ${info.nrHwQueues} queue(s) x ${info.queueDepth}, flags 0x${info.flags.toString(16)}`);
    try {
      await control.setParams(info.devId, deviceParams(o));
    } catch (err) {
      await control.delDev(info.devId).catch(() => {});
      throw err;
    }
    return UblkDevice.serve(control, info, o, 'start');
  }

  /**
   * Takes over device devId, created with UBLK_F_USER_RECOVERY by a server that died: the kernel holds it
   * QUIESCED, queueing the host's I/O. START_USER_RECOVERY (once the dead server's char device is closed),
   * fresh queues, END_USER_RECOVERY. The caller's table must describe the same disk. A failure leaves the
   * device quiesced for another attempt; it is never deleted here.
   */
  static async recover(control: UblkControlDevice, devId: number, o: DeviceOptions, timeoutMs = 10_000): Promise<UblkDevice> {
    const deadline = Date.now() + timeoutMs;
    let info = await control.getDevInfo(devId);
    if ((info.flags & UBLK_F_USER_RECOVERY) === 0n) {
      throw new VdiskError(`/dev/ublkb${devId} was not created with user recovery: it cannot be taken over`, { code: 'EINVAL' });
    }
    // The old server's exit quiesces the device asynchronously: wait for it rather than fail a fast restart.
    while (info.state !== UBLK_S_DEV_QUIESCED && Date.now() < deadline) {
      await sleep(50);
      info = await control.getDevInfo(devId);
    }
    if (info.state !== UBLK_S_DEV_QUIESCED) {
      const state = info.state === UBLK_S_DEV_LIVE ? 'live (its server is still running)' : 'dead';
      throw new VdiskError(`/dev/ublkb${devId} is ${state}, not quiesced: nothing to recover`, { code: 'EBUSY' });
    }
    const params = await control.getParams(devId);
    if (params.basic && params.basic.devSectors !== o.sizeBytes / 512) {
      throw new VdiskError(`/dev/ublkb${devId} has ${params.basic.devSectors} sectors, but the disk given has ${o.sizeBytes / 512}`, { code: 'EINVAL' });
    }
    // START_USER_RECOVERY once the queue workers wait at the char device gate (serve): the kernel refuses a
    // second START until a queue has fetched, so the window after it must be short.
    let resumed = false;
    const startRecovery = async () => {
      for (;;) {
        try {
          await control.startUserRecovery(devId);
          break;
        } catch (err) {
          const code = (err as VdiskError).code;
          // EINVAL on a quiesced device created with user recovery: nr_queues_ready is 0 (6.12), so an
          // earlier server STARTed a recovery and died before any queue fetched. That START reset the
          // queues, and the server maps the descriptor area only after its FETCHes: the device is where a
          // START would leave it, and the fetches go ahead without one.
          if (code === 'EINVAL') {
            resumed = true;
            process.stderr.write(`vdisk: /dev/ublkb${devId}: START_USER_RECOVERY refused (EINVAL): an earlier recovery was abandoned after its START; resuming it\n`);
            return;
          }
          // EBUSY while the dead server's /dev/ublkcN is still being released.
          if (code !== 'EBUSY' || Date.now() > deadline) throw err;
          await sleep(50);
        }
      }
      debug(`dev ${devId}: START_USER_RECOVERY done`);
      failpoint('agent.recovering');
    };
    try {
      return await UblkDevice.serve(control, info, o, 'recover', startRecovery);
    } catch (err) {
      if (!resumed) throw err;
      // The abandoned recovery got further than its START (a mapping or a FETCH the kernel keeps): no server
      // can take this device over again. Deleting it fails the I/O it holds instead of holding it for ever.
      await control.delDev(devId).catch(() => {});
      throw new VdiskError(`/dev/ublkb${devId} cannot be recovered (an earlier recovery was abandoned midway: ${(err as Error).message}); ` +
        'it was deleted, failing the I/O it held', { code: 'ENOTRECOVERABLE' });
    }
  }

  /** Opens the char device, runs one queue task per queue and, once all fetched, START_DEV or END_USER_RECOVERY. */
  private static async serve(
    control: UblkControlDevice, info: UblksrvCtrlDevInfo, o: DeviceOptions, mode: 'start' | 'recover', beforeOpen?: () => Promise<void>,
  ): Promise<UblkDevice> {
    const devId = info.devId;
    let cdevFd = -1;
    let pool: Piscina | undefined;
    const ctl = new Int32Array(new SharedArrayBuffer(ctlWords(info.nrHwQueues) * 4));
    const dirty = o.dirty ?? startDirty(o.table, new Int32Array(o.containerFds));
    const tasks: Promise<QueueTaskResult>[] = [];
    const io = ioStatsBuffer(info.nrHwQueues);
    const wakeFds: number[] = [];
    const ports: MessagePort[] = [];
    try {
      // A recovery opens the char device after its START (beforeOpen), with the workers already waiting.
      if (!beforeOpen) cdevFd = await openCharDevice(`/dev/ublkc${devId}`);
      pool = new Piscina({ filename: workerFile(), minThreads: info.nrHwQueues, maxThreads: info.nrHwQueues, idleTimeout: 2 ** 31 - 1, concurrentTasksPerWorker: 1 });
      poolsAlive++;
      const fetched: Promise<void>[] = [];
      const prepared: Promise<void>[] = [];
      const faults = new FaultRouter(o.onFault, ports, wakeFds);
      const syncs = o.sync && o.onSync ? new SyncRouter(o.onSync, new Int32Array(o.sync), ports, wakeFds) : undefined;
      for (let q = 0; q < info.nrHwQueues; q++) {
        const { port1, port2 } = new MessageChannel();
        ports.push(port1);
        wakeFds.push(addon().eventfd());
        const args: QueueTaskArgs = {
          devId, qId: q, depth: info.queueDepth, maxIoBufBytes: info.maxIoBufBytes,
          encoded: (info.flags & UBLK_F_CMD_IOCTL_ENCODE) !== 0n, cdevFd, wakeFd: wakeFds[q],
          table: o.table.buffer, segments: o.table.segments, segmentSize: o.table.segmentSize,
          sectors: o.sizeBytes / 512, containerFds: o.containerFds, dirty, control: ctl.buffer as SharedArrayBuffer, ioStats: io,
          port: port2 as unknown as QueueTaskArgs['port'], faults: o.onFault !== undefined,
          ...(syncs ? { sync: o.sync } : {}),
          ...(syncs && o.claims && o.onFault ? { claims: o.claims } : {}),
        };
        const task = pool.run(args, { transferList: [port2] as never }) as Promise<QueueTaskResult>;
        tasks.push(task);
        let onPrepared = () => {};
        prepared.push(new Promise<void>((resolve) => { onPrepared = resolve; }));
        fetched.push(new Promise<void>((resolve, reject) => {
          port1.on('message', (m: QueueMessage) => {
            if (m.type === 'prepared') onPrepared();
            else if (m.type === 'fetched') resolve();
            else if (m.type === 'error') reject(new VdiskError(`queue ${m.qId}: ${m.message}`, { code: 'EQUEUE' }));
            else if (m.type === 'ioerror') reportIoError(o, m.sector, m.sectors);
            else if (m.type === 'ahead') o.onAhead?.(m.segment, m.from);
            else if (m.type === 'sync') syncs?.report(m.qId, m.gen);
            else if (m.type === 'claimed') o.onClaimed?.();
            else faults.report(m.qId, { op: m.op, segment: m.segment, states: m.states, offset: m.offset, length: m.length });
          });
          task.then(() => reject(new VdiskError(`queue ${q} ended before it was ready`, { code: 'EQUEUE' })), reject);
        }));
      }
      if (beforeOpen) {
        // A queue that fails before its gate rejects `fetched`: race them so that it is not waited for.
        await Promise.race([Promise.all(prepared), Promise.all(fetched)]);
        await beforeOpen();
        cdevFd = await openCharDevice(`/dev/ublkc${devId}`);
        Atomics.store(ctl, CTL_CDEV, cdevFd + 1);
        Atomics.notify(ctl, CTL_CDEV);
      }
      await Promise.all(fetched);
      if (mode === 'start') {
        debug(`dev ${devId}: every queue fetched its tags; START_DEV`);
        await control.startDev(devId, process.pid);
      } else {
        debug(`dev ${devId}: every queue fetched its tags; END_USER_RECOVERY`);
        await control.endUserRecovery(devId, process.pid);
      }
      debug(`dev ${devId}: live`);
      return new UblkDevice(control, info, cdevFd, pool, tasks, ctl, wakeFds, ports, io);
    } catch (err) {
      debug(`dev ${devId}: ${mode} failed (${(err as Error).message}); tearing down`);
      // Workers still at the char device gate give up there.
      if (Atomics.compareExchange(ctl, CTL_CDEV, 0, -1) === 0) Atomics.notify(ctl, CTL_CDEV);
      await teardown(control, devId, cdevFd, pool, tasks, ctl, wakeFds, false, mode === 'start');
      throw err;
    }
  }

  /**
   * Resolves once every request that any queue had started before this call has completed: the blocking
   * flag. Table changes made before calling it are seen by every request started after it resolves.
   */
  async barrier(timeoutMs = 30_000): Promise<void> {
    const target = epochAfter(Atomics.add(this.ctl, CTL_EPOCH, 1));
    for (const fd of this.wakeFds) addon().eventfdWrite(fd);
    const deadline = Date.now() + timeoutMs;
    for (let q = 0; q < this.queues; q++) {
      for (;;) {
        const seen = Atomics.load(this.ctl, CTL_DRAINED + q);
        if (epochReached(seen, target)) break;
        const left = deadline - Date.now();
        if (left <= 0 || this.stopped) {
          throw new VdiskError(`queue ${q} of /dev/ublkb${this.devId} still has requests from before the barrier`, { code: 'ETIMEDOUT' });
        }
        const w = Atomics.waitAsync(this.ctl, CTL_DRAINED + q, seen, Math.min(left, 100));
        if (w.async) await w.value;
      }
    }
  }

  /** Stops and deletes the device; resolves with each queue's counters. Idempotent. */
  async stop(): Promise<QueueTaskResult[]> {
    if (this.stopped) return [];
    this.stopped = true;
    // STOP_DEV waits for every request: parked ones would never be answered now, so fail them first.
    this.ports.forEach((port, q) => {
      port.postMessage({ type: 'failParked', errno: abi.EIO } satisfies DeviceMessage);
      addon().eventfdWrite(this.wakeFds[q]);
    });
    return teardown(this.control, this.devId, this.cdevFd, this.pool, this.tasks, this.ctl, this.wakeFds, true);
  }
}

async function teardown(
  control: UblkControlDevice, devId: number, cdevFd: number, pool: Piscina | undefined,
  tasks: Promise<QueueTaskResult>[], ctl: Int32Array, wakeFds: number[], started: boolean, deleteDevice = true,
): Promise<QueueTaskResult[]> {
  let firstError: unknown;
  debug(`dev ${devId}: teardown (started=${started})`);
  if (started) {
    try {
      await control.stopDev(devId);
    } catch (err) {
      firstError = err;
    }
  }
  // The disk is gone (or never came): queues still parked in the kernel leave by closing their rings.
  Atomics.store(ctl, CTL_QUIT, 1);
  for (const fd of wakeFds) addon().eventfdWrite(fd);
  const settled = await Promise.allSettled(tasks);
  debug(`dev ${devId}: queue tasks ended`);
  for (const fd of wakeFds) fs.closeSync(fd);
  const results: QueueTaskResult[] = [];
  for (const s of settled) {
    if (s.status === 'fulfilled') results.push(s.value);
    else firstError ??= s.reason;
  }
  if (pool) {
    await pool.destroy();
    poolsAlive--;
  }
  if (cdevFd >= 0) fs.closeSync(cdevFd);
  if (deleteDevice) {
    debug(`dev ${devId}: DEL_DEV`);
    try {
      await control.delDev(devId);
      debug(`dev ${devId}: deleted`);
    } catch (err) {
      firstError ??= err;
    }
  }
  if (firstError !== undefined && started) throw VdiskError.from(firstError, `stopping /dev/ublkb${devId}`);
  return results;
}

function reportIoError(o: DeviceOptions, sector: number, sectors: number): void {
  const size = o.table.segmentSize;
  const first = Math.floor((sector * 512) / size);
  const last = Math.floor(((sector + Math.max(1, sectors)) * 512 - 1) / size);
  debug(`I/O error on sectors ${sector}+${sectors}: segments ${first}..${last}`);
  o.onIoError?.(first, Math.min(last, o.table.segments - 1) - first + 1);
}

/** /dev/ublkcN appears shortly after ADD_DEV (udev or devtmpfs): retry for a few seconds. */
async function openCharDevice(path: string, timeoutMs = 5000): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return fs.openSync(path, fs.constants.O_RDWR);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if ((code !== 'ENOENT' && code !== 'EBUSY') || Date.now() > deadline) throw VdiskError.from(err, `open ${path}`);
      await sleep(20);
    }
  }
}

/**
 * Routes faults from the queue workers to the device's handler: one handler call per segment however
 * many requests wait on it, and the answer goes to every queue that reported it, followed by a wake. The
 * handler sees the first request's piece; the others retry and fault again if the answer did not cover them.
 */
class FaultRouter {
  private readonly waiting = new Map<number, Set<number>>(); // segment -> queues with parked requests

  constructor(
    private readonly handler: DeviceOptions['onFault'],
    private readonly ports: MessagePort[],
    private readonly wakeFds: number[],
  ) {}

  report(qId: number, f: Fault): void {
    const segment = f.segment;
    const queues = this.waiting.get(segment);
    if (queues) {
      queues.add(qId);
      return;
    }
    this.waiting.set(segment, new Set([qId]));
    const answer = this.handler ? this.handler(f) : Promise.resolve(-abi.EIO);
    answer.catch((err: unknown) => {
      debug(`fault on segment ${segment} failed: ${(err as Error).message}`);
      return -abi.EIO;
    }).then((result) => {
      const waiting = this.waiting.get(segment) ?? new Set<number>();
      this.waiting.delete(segment);
      for (const q of waiting) {
        this.ports[q].postMessage({ type: 'resolved', segment, result } satisfies DeviceMessage);
        addon().eventfdWrite(this.wakeFds[q]);
      }
    });
  }
}

/**
 * Routes the queues' sync requests to the device's handler: one disk.sync at a time however many queues wait,
 * and another after it when a queue asked for a generation it did not cover. Every queue that asked gets each
 * answer (it releases the requests the generation covers), followed by a wake.
 */
class SyncRouter {
  private readonly asking = new Set<number>();
  private want = 0;
  private running = false;

  constructor(private readonly handler: () => Promise<number>, private readonly words: Int32Array,
    private readonly ports: MessagePort[], private readonly wakeFds: number[]) {}

  report(qId: number, gen: number): void {
    if (this.asking.size === 0 || !genReached(this.want, gen)) this.want = gen;
    this.asking.add(qId);
    if (!this.running) void this.run();
  }

  private async run(): Promise<void> {
    this.running = true;
    const want = this.want;
    const result = await this.handler().catch((err: unknown) => {
      debug(`sync failed: ${(err as Error).message}`);
      return -abi.EIO;
    });
    const gen = result < 0 ? want : Atomics.load(this.words, SYNC_DURABLE);
    for (const q of this.asking) {
      this.ports[q].postMessage({ type: 'synced', gen, result: Math.min(result, 0) } satisfies DeviceMessage);
      addon().eventfdWrite(this.wakeFds[q]);
    }
    this.running = false;
    if (result < 0 || genReached(gen, this.want)) this.asking.clear();
    else void this.run();
  }
}

/**
 * The dirty-container bitmap of a device whose owner keeps none: every container its table maps now
 * (alternate locations included). Writes a previous incarnation (a crashed agent, an earlier attach)
 * acknowledged may still sit in their page cache, and the first FLUSH must reach them; other containers
 * start clean, so a FLUSH reaches this disk's containers only.
 */
function startDirty(table: MappingTable, fds: Int32Array): SharedArrayBuffer {
  const dirty = new Int32Array(new SharedArrayBuffer(dirtyWords(fds.length) * 4));
  const mark = (id: number) => { if (id < fds.length) markDirty(dirty, id); };
  for (let i = 0; i < table.segments; i++) {
    const states = table.load(i);
    if (states & (STATE_INVALID | STATE_ZERO)) continue;
    mark(table.container);
    if (states & STATE_ALTERNATE && table.alternates) mark(table.alternates.container(table.alt));
  }
  return dirty.buffer as SharedArrayBuffer;
}
