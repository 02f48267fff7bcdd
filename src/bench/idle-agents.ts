// Benchmark: what idle agents cost the controller. A real controller process, then N agent connections made
// with the real protocol code, each registering and pinging at the real agent's rate (a quarter of its lease);
// the controller's CPU time (from /proc) and resident memory, with 0 agents and with N, over the same window.
// This is the figure docs/DESIGN.md sizes one controller by. `node dist/bench/idle-agents.js [N] [SECONDS] [tls]`;
// `npm run bench` has the rows for the Unix socket and for TLS on loopback (each agent its own credential).
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { socketPath } from '../controller/paths.js';
import { controllerRequest } from '../protocol/agent-ops.js';
import { connect } from '../protocol/client.js';
import type { Connection } from '../protocol/connection.js';
import { DEFAULT_LEASE_MS } from '../protocol/lease.js';
import { sleep } from '../util/sleep.js';
import { ratioRow, type Row, type Where } from './report.js';
import { LISTEN_ARGS, tlsAgentConnector } from './tls.js';

export interface IdleAgentsResult {
  agents: number;
  seconds: number;
  leaseMs: number;
  /** The controller's CPU over the window, as a percentage of one core: without agents, and with them. */
  cpuPercentIdle: number;
  cpuPercentWithAgents: number;
  /** CPU per agent: microseconds of controller CPU per second of wall time. */
  cpuMicrosPerAgentPerSecond: number;
  pingsPerSecond: number;
  rssIdleMiB: number;
  rssWithAgentsMiB: number;
  rssKiBPerAgent: number;
}

/** Opens one agent's connection; a transport (the Unix socket here) is a parameter so others can be measured. */
export type AgentConnector = (hostId: string) => Promise<Connection>;
/** Makes the connector for a controller's data dir, knowing the host ids it will be asked for (before the idle window). */
export type ConnectorFactory = (dataDir: string, hostIds: string[]) => AgentConnector | Promise<AgentConnector>;

const ticksPerSecond = (() => {
  const r = spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' });
  const n = Number(r.stdout?.trim());
  return Number.isFinite(n) && n > 0 ? n : 100;
})();

/** utime + stime of a process, in seconds (fields 14 and 15 of /proc/PID/stat, after the command name). */
function cpuSeconds(pid: number): number {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / ticksPerSecond;
}

function rssMiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

async function window(pid: number, seconds: number): Promise<number> {
  const c0 = cpuSeconds(pid);
  const t0 = performance.now();
  await sleep(seconds * 1000);
  return (100 * (cpuSeconds(pid) - c0)) / ((performance.now() - t0) / 1000);
}

/**
 * Starts a controller in a fresh data dir (a child process: its CPU is its own), runs `fn`, stops it. `listen`:
 * with its TLS listener on a free loopback port.
 */
export async function withController<T>(fn: (pid: number, dataDir: string) => Promise<T>, o: { listen?: boolean } = {}): Promise<T> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vdisk-idle-'));
  const main = fileURLToPath(new URL('../cli/main.js', import.meta.url));
  const proc = spawn(process.execPath, [main, 'controller', 'start', '--foreground', '--data-dir', dir, ...(o.listen ? LISTEN_ARGS : [])], { stdio: 'ignore' });
  try {
    for (let i = 0; ; i++) {
      try {
        const { conn } = await connect(socketPath(dir), { role: 'cli', timeoutMs: 1000 });
        await conn.close();
        break;
      } catch (err) {
        if (i > 600 || proc.exitCode !== null) throw err;
        await sleep(50);
      }
    }
    return await fn(proc.pid!, dir);
  } finally {
    proc.kill('SIGTERM');
    await new Promise((r) => (proc.exitCode !== null ? r(null) : proc.once('exit', r)));
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

export interface IdleAgentsOptions {
  agents?: number; seconds?: number; leaseMs?: number; connector?: ConnectorFactory; listen?: boolean; log?: (m: string) => void;
}

export async function idleAgentsBench(o: IdleAgentsOptions = {}): Promise<IdleAgentsResult> {
  const agents = o.agents ?? 100;
  const seconds = o.seconds ?? 20;
  const leaseMs = o.leaseMs ?? DEFAULT_LEASE_MS;
  const log = o.log ?? (() => {});
  const hostIds = Array.from({ length: agents }, (_, i) => `sim-${i}`);
  return withController(async (pid, dir) => {
    const open: AgentConnector = (await o.connector?.(dir, hostIds)) ?? (async (hostId) => (await connect(socketPath(dir), { role: 'agent', hostId })).conn);
    await sleep(1000); // start-up work (schema, recovery) out of the idle window
    const rssIdleMiB = rssMiB(pid);
    const cpuPercentIdle = await window(pid, seconds);
    log(`controller alone: ${cpuPercentIdle.toFixed(2)} % of a core, ${rssIdleMiB.toFixed(1)} MiB`);
    const conns: Connection[] = [];
    let pings = 0;
    const timers: NodeJS.Timeout[] = [];
    try {
      for (let i = 0; i < agents; i++) {
        const conn = await open(hostIds[i]!);
        await controllerRequest(conn, 'agent.register', { pid: process.pid, leaseMs, disks: [], claims: [] });
        conns.push(conn);
        // The real agent pings every quarter lease (src/agent/agent.ts); spread the phases as real hosts would.
        const every = Math.max(100, Math.floor(leaseMs / 4));
        timers.push(setTimeout(() => {
          timers.push(setInterval(() => {
            void controllerRequest(conn, 'agent.ping', {}, { timeoutMs: leaseMs }).then(() => { pings++; }, () => {});
          }, every));
        }, Math.floor((every * i) / agents)));
      }
      await sleep(leaseMs / 2);
      const p0 = pings;
      const t0 = performance.now();
      const cpuPercentWithAgents = await window(pid, seconds);
      const pingsPerSecond = (pings - p0) / ((performance.now() - t0) / 1000);
      const rssWithAgentsMiB = rssMiB(pid);
      log(`with ${agents} agents: ${cpuPercentWithAgents.toFixed(2)} % of a core, ${rssWithAgentsMiB.toFixed(1)} MiB, ${pingsPerSecond.toFixed(0)} pings/s`);
      return {
        agents, seconds, leaseMs, cpuPercentIdle, cpuPercentWithAgents,
        cpuMicrosPerAgentPerSecond: Math.max(0, ((cpuPercentWithAgents - cpuPercentIdle) / 100) * 1e6 / agents),
        pingsPerSecond, rssIdleMiB, rssWithAgentsMiB,
        rssKiBPerAgent: ((rssWithAgentsMiB - rssIdleMiB) * 1024) / agents,
      };
    } finally {
      for (const t of timers) clearTimeout(t);
      await Promise.all(conns.map((c) => c.close().catch(() => {})));
    }
  }, { listen: o.listen ?? false });
}

/** The same N idle agents on the Unix socket, then over TLS on loopback, each TLS host with its own credential. */
export async function idleTransportsBench(o: { agents: number; seconds: number; log: (m: string) => void }): Promise<{ unix: IdleAgentsResult; tls: IdleAgentsResult }> {
  const unix = await idleAgentsBench({ ...o, log: (m) => o.log(`idle agents, Unix socket: ${m}`) });
  const tls = await idleAgentsBench({ ...o, listen: true, connector: tlsAgentConnector, log: (m) => o.log(`idle agents, TLS: ${m}`) });
  return { unix, tls };
}

/** CPU rows only: resident memory per agent stays within the sampler's noise (it is in the JSON). */
export function idleAgentsRows(r: { unix: IdleAgentsResult; tls: IdleAgentsResult }, where: Where): Row[] {
  const u = r.unix;
  const section = `controller CPU with ${u.agents} idle agents (real controller process, a ping per agent every ${u.leaseMs / 4} ms, ${u.seconds} s windows)`;
  const line = (x: IdleAgentsResult) => `${x.cpuMicrosPerAgentPerSecond.toFixed(0)} us/s per agent (${x.cpuPercentWithAgents.toFixed(2)} % of a core; ` +
    `alone ${x.cpuPercentIdle.toFixed(2)} %; ${x.pingsPerSecond.toFixed(0)} pings/s)`;
  return [
    { section, where, name: 'controller CPU per idle agent, Unix socket', value: line(u), figure: Math.round(u.cpuMicrosPerAgentPerSecond) },
    { section, where, name: 'controller CPU per idle agent, TLS (loopback, a credential per host)', value: line(r.tls), figure: Math.round(r.tls.cpuMicrosPerAgentPerSecond) },
    ratioRow(section, where, 'controller CPU per idle agent, TLS / Unix socket', r.tls.cpuMicrosPerAgentPerSecond, u.cpuMicrosPerAgentPerSecond, 'us/s'),
  ];
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const tls = process.argv[4] === 'tls';
  const r = await idleAgentsBench({ agents: Number(process.argv[2] ?? 100), seconds: Number(process.argv[3] ?? 20), log: (m) => console.error(m),
    ...(tls ? { listen: true, connector: tlsAgentConnector } : {}) });
  console.log(JSON.stringify(r, null, 2));
}
