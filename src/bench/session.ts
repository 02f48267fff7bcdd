// A benchmark's view of one controller: the real `vdisk` binary (spawned, so its wall time includes node's
// start), single requests on the controller's socket, and a stand-in agent built from the real protocol
// (agentDispatcher, controllerRequest) and the agent's real table, which starts no device: no ublk needed.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { socketPath } from '../controller/paths.js';
import { VdiskError } from '../errors.js';
import { agentDispatcher, controllerRequest, type AgentHandlers } from '../protocol/agent-ops.js';
import { connect, type TlsEndpoint } from '../protocol/client.js';
import type { Connection } from '../protocol/connection.js';
import { FAULT_WRITE } from '../protocol/fault-ops.js';
import { ENTRY_BYTES } from '../table/entry-codec.js';
import { MappingTable, STATE_ZERO } from '../table/mapping-table.js';

/** The built CLI next to this file (dist/bench -> dist/cli/main.js; dist-test/src/bench likewise). */
export const CLI_MAIN = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'cli', 'main.js');
/** The stand-in agent's host id: it answers table commands and starts no device. */
export const NO_DEVICE_HOST = 'bench-nodevice';

export const elapsed = (t0: number): number => Number((performance.now() - t0).toFixed(1));

export interface CliRun { out: string; ms: number }

/** What the stand-in agent saw, with performance.now() times: how the controller's work splits up. */
export interface StandInMarks {
  tableCreate?: number; tableCreated?: number; tableSet?: number; tableLoaded?: number; entries?: number; deviceStart?: number;
  tableStates?: { count: number; blocking: boolean; ms: number };
}
export interface StandIn { conn: Connection; marks: StandInMarks; tables: Map<number, MappingTable>; close(): Promise<void> }

export interface FaultRun { concurrency: number; faults: number; elapsedMs: number; faultsPerSec: number }

/** Runs the built CLI with `env` to completion: its stdout and wall time (node start included). */
export function runCli(env: NodeJS.ProcessEnv, args: string[]): Promise<CliRun> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const p = spawn(process.execPath, [CLI_MAIN, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    p.stdout.on('data', (d: Buffer) => { out += d.toString(); });
    p.stderr.on('data', (d: Buffer) => { err += d.toString(); });
    p.once('error', reject);
    p.once('exit', (code) => {
      if (code === 0) resolve({ out, ms: elapsed(t0) });
      else reject(new VdiskError(`vdisk ${args.join(' ')} exited ${code}: ${err.trim()}`, { code: 'EIO' }));
    });
  });
}

export class BenchSession {
  readonly sock: string;
  /** A clean environment: nothing inherited (NODE_OPTIONS...) reaches the controller and agent daemons. */
  readonly env: NodeJS.ProcessEnv;

  constructor(readonly dataDir: string) {
    fs.rmSync(dataDir, { recursive: true, force: true });
    this.sock = socketPath(dataDir);
    this.env = { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin', HOME: process.env.HOME ?? '/root', VDISK_DATA_DIR: dataDir };
    for (const [k, v] of Object.entries(process.env)) if (k.startsWith('VDISK_TEST_') || k === 'VDISK_IN_VM') this.env[k] = v;
    // For profiling the daemons on purpose: VDISK_BENCH_NODE_OPTIONS='--import=FILE', FILE starting
    // node:inspector's profiler (node 20 refuses --cpu-prof in NODE_OPTIONS: the daemon exits at once).
    if (process.env.VDISK_BENCH_NODE_OPTIONS) this.env.NODE_OPTIONS = process.env.VDISK_BENCH_NODE_OPTIONS;
  }

  /** Runs the CLI to completion: its stdout and wall time (node start included). */
  cli(...args: string[]): Promise<CliRun> {
    return runCli(this.env, args);
  }

  async cliJson<T>(...args: string[]): Promise<T> {
    return JSON.parse((await this.cli(...args, '--json')).out) as T;
  }

  /** One request on its own connection; ms is the request alone (connecting excluded). */
  async rpc<T = unknown>(op: string, args: Record<string, unknown> = {}): Promise<{ result: T; ms: number }> {
    const { conn } = await connect(this.sock, { role: 'cli' });
    try {
      const t0 = performance.now();
      const r = await conn.request(op, args, { timeoutMs: 300_000 });
      return { result: r.result as T, ms: elapsed(t0) };
    } finally {
      await conn.close();
    }
  }

  /** Median of three `controller status` runs: node's start, to subtract from CLI wall times. */
  async cliStartup(): Promise<{ median: number; runs: number[] }> {
    const runs: number[] = [];
    for (let i = 0; i < 3; i++) runs.push((await this.cli('controller', 'status', '--json')).ms);
    return { median: [...runs].sort((a, b) => a - b)[1]!, runs };
  }

  /**
   * A stand-in agent in this process: the agent's real table (one MappingTable per disk) behind the real
   * dispatcher, but no device. With no device there is no I/O in flight, so the blocking flag costs nothing:
   * what remains is the controller's work and the table's. `via`: over the controller's TLS listener with that
   * host credential (its host id), as an agent of another host connects, instead of the Unix socket.
   */
  async standIn(o: { hostId?: string; via?: TlsEndpoint } = {}): Promise<StandIn> {
    const hostId = o.via?.credential.hostId ?? o.hostId ?? NO_DEVICE_HOST;
    const { conn } = await connect(o.via ?? this.sock, { role: 'agent', hostId });
    const marks: StandInMarks = {};
    const tables = new Map<number, MappingTable>();
    const table = (diskId: number): MappingTable => {
      const t = tables.get(diskId);
      if (!t) throw new VdiskError(`the stand-in agent holds no table for disk ${diskId}`, { code: 'ENOENT' });
      return t;
    };
    let reconciled!: () => void;
    const ready = new Promise<void>((resolve) => { reconciled = resolve; });
    const device = (diskId: number, queues: number) => ({ devId: 900_000 + diskId, path: '/dev/null', queues });
    const handlers: AgentHandlers = {
      'containers.set': () => { reconciled(); return { errors: [] }; },
      'fault.cancel': () => ({}), // the stand-in parks no delayed fault
      'table.create': (a) => {
        marks.tableCreate = performance.now();
        tables.set(a.diskId, MappingTable.create({ segments: Math.ceil(a.size / a.segmentSize), segmentSize: a.segmentSize }));
        marks.tableCreated = performance.now();
        return {};
      },
      'table.delete': (a) => { tables.delete(a.diskId); return {}; },
      'table.get': (a) => {
        const words = table(a.diskId).words;
        const bytes = new Uint8Array(words.buffer, words.byteOffset + a.first * ENTRY_BYTES, a.count * ENTRY_BYTES).slice();
        return { result: { first: a.first, count: a.count }, payload: bytes };
      },
      'table.set': (a, payload) => {
        marks.tableSet = performance.now();
        table(a.diskId).loadBytes(a.first, payload);
        marks.tableLoaded = performance.now();
        marks.entries = payload.byteLength / ENTRY_BYTES;
        return {};
      },
      'table.alt': (a, payload) => {
        const alts = table(a.diskId).alternates;
        if (!alts) throw new VdiskError('this table has no alternate locations', { code: 'EINVAL' });
        alts.set(a.slot, a.container, a.offset, payload);
        return {};
      },
      'table.states': (a) => {
        const t0 = performance.now();
        table(a.diskId).changeStates(a.first, a.count, a.bits, a.set);
        marks.tableStates = { count: a.count, blocking: a.blocking, ms: Number((performance.now() - t0).toFixed(2)) };
        return {};
      },
      'device.start': (a) => { marks.deviceStart = performance.now(); return device(a.diskId, a.queues); },
      'device.recover': (a) => device(a.diskId, 1),
      'device.stop': () => ({ claims: [] }),
      'grants.revoke': () => ({ claims: [] }),
      'agent.status': () => ({ pid: process.pid, hostId, leaseMs: 10_000, suspended: false, drained: false, disks: [] }),
      'agent.exit': () => ({}),
    };
    conn.onRequest(agentDispatcher(handlers));
    await controllerRequest(conn, 'agent.register', { pid: process.pid, leaseMs: 10_000, disks: [], claims: [] });
    await ready; // the controller reconciles a new agent right after registering it
    // Pings as a real agent does: a part that runs longer than the lease (the thick snapshot part) would
    // otherwise find the stand-in dropped as lost.
    const pinger = setInterval(() => { void controllerRequest(conn, 'agent.ping', {}, { timeoutMs: 10_000 }).catch(() => {}); }, 2_500);
    return { conn, marks, tables, close: () => { clearInterval(pinger); return conn.close(); } };
  }

  /**
   * The controller's side of `count` map faults, sent by a stand-in agent `concurrency` at a time as first
   * writes to distinct Zero segments from `first` on: allocation, zeroing + fdatasync, SQLite commit. `via`:
   * the stand-in connects over TLS (see standIn).
   */
  async faults(disk: string, first: number, count: number, concurrency: number, via?: TlsEndpoint): Promise<FaultRun> {
    const agent = await this.standIn({ via });
    try {
      const { id } = (await this.rpc<{ id: number }>('disk.info', { name: disk })).result;
      // Every fault allocates: the segments go in a scattered order (a stride coprime to count, so each once),
      // so no fault continues the one before it and nothing is mapped ahead of a "sequential writer".
      const order = scattered(count).map((i) => first + i);
      let next = 0;
      const t0 = performance.now();
      await Promise.all(Array.from({ length: concurrency }, async () => {
        while (next < count) {
          const segment = order[next++]!;
          const r = await controllerRequest(agent.conn, 'fault', { diskId: id, op: FAULT_WRITE, segment, states: STATE_ZERO, offset: 0 }, { timeoutMs: 0 });
          if (r.action !== 'entry' || r.entry.states & STATE_ZERO) throw new VdiskError(`fault on segment ${segment}: ${JSON.stringify(r)}`, { code: 'EIO' });
        }
      }));
      const ms = performance.now() - t0;
      return { concurrency, faults: count, elapsedMs: Number(ms.toFixed(1)), faultsPerSec: Math.round(count / (ms / 1000)) };
    } finally {
      await agent.close();
    }
  }

  /**
   * `vdisk controller stop`, then makes sure the controller is gone: after a failure (a request that never got
   * its answer) it may hang in its own shutdown, and it must not outlive the bench.
   */
  async stopController(pid: number | undefined, log: (m: string) => void): Promise<void> {
    await this.cli('controller', 'stop').catch((e: Error) => log(`cleanup: ${e.message}`));
    if (pid === undefined) return;
    const alive = () => { try { process.kill(pid, 0); return true; } catch { return false; } };
    for (let i = 0; i < 100 && alive(); i++) await new Promise((r) => setTimeout(r, 50));
    if (alive()) {
      log(`cleanup: controller ${pid} still running 5 s after controller stop: killing it`);
      process.kill(pid, 'SIGKILL');
    }
  }
}

/** 0..count-1, each once, with no two neighbours (count >= 4) next to each other in the order. */
export function scattered(count: number): number[] {
  // Stride of about count / phi, made coprime to count: i * stride mod count visits every index once.
  let stride = Math.max(1, Math.floor(count * 0.618));
  while (gcd(stride, count) !== 1) stride++;
  return Array.from({ length: count }, (_, i) => (i * stride) % count);
}

function gcd(a: number, b: number): number {
  return b === 0 ? a : gcd(b, a % b);
}
