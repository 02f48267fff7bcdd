// The controller's metrics: map faults by kind (count, time to answer), containers (size, used, failed),
// agents (connected, lease, suspended), disks (allocation and Error segments from the tables, I/O counts from
// each agent serving them), as one snapshot for `vdisk stats` and as Prometheus text for a scraper
// (`vdisk controller start --metrics HOST:PORT`). Counting is a few additions per fault: nothing per I/O; the
// agents count their I/O themselves and are asked at snapshot time.
import http from 'node:http';
import { FAULT_DISCARD, FAULT_READ, FAULT_RECLAIM, FAULT_WRITE } from '../protocol/fault-ops.js';
import { agentRequest, type AgentStatusReport } from '../protocol/agent-ops.js';
import type { DelayCounts, GrantPoolStats, IoCounts } from '../protocol/io-counts.js';
import { ENTRY_BYTES, decodeEntry } from '../table/entry-codec.js';
import { STATE_ERROR } from '../table/mapping-table.js';
import type { AgentLink, AgentRegistry } from './agents.js';
import { isMapped, type Disk, type Store } from './store.js';

/** How long a snapshot waits for an agent's counters: a stuck agent shows as unanswered, never stalls stats. */
const AGENT_STATUS_TIMEOUT_MS = 2000;

const KINDS: Record<number, string> = { [FAULT_READ]: 'read', [FAULT_WRITE]: 'write', [FAULT_DISCARD]: 'discard', [FAULT_RECLAIM]: 'reclaim' };

export interface FaultStats { count: number; errors: number; totalMs: number; maxMs: number }
export interface StatsSnapshot {
  uptimeS: number;
  faults: Record<string, FaultStats>;
  containers: Array<{ name: string; sizeBytes: number; usedBytes: number; failed: boolean }>;
  agents: AgentStats[];
  disks: number;
  /** Per disk: what its table maps and, on each host serving it, the I/O counts there. */
  diskStats: DiskStats[];
}

export interface AgentStats {
  hostId: string; leaseMs: number; connectedS: number;
  /** Whether the agent has suspended its tables (lost its lease); undefined when it did not answer. */
  suspended?: boolean;
  /** Why the agent's counters are missing, if they are. */
  unanswered?: string;
}

export interface DiskStats {
  name: string; sizeBytes: number; readOnly: boolean;
  /** Bytes of segments the table maps (alternates included), and entries in the Error state. */
  allocatedBytes: number; errorSegments: number;
  /** delays: the disk's delayed faults there; grants: its grant pool there (null from an agent that does not report them). */
  hosts: Array<{ hostId: string; device: string | null; io: IoCounts | null; delays: DelayCounts | null; grants: GrantPoolStats | null }>;
}

export class Metrics {
  private readonly started = Date.now();
  private readonly faults = new Map<string, FaultStats>();

  /** One answered fault: its kind, how long the answer took, and whether it was an error answer. */
  fault(op: number, ms: number, error: boolean): void {
    this.record(KINDS[op] ?? 'other', ms, error);
  }

  /** One answered ahead hint: kind `ahead` when it mapped a window, `ahead-declined` when not. */
  ahead(ms: number, mapped: boolean): void {
    this.record(mapped ? 'ahead' : 'ahead-declined', ms, false);
  }

  /** One answered disk.sync: kind `sync` when it committed lazy mappings durably, `sync-none` when all were. */
  sync(ms: number, committed: boolean): void {
    this.record(committed ? 'sync' : 'sync-none', ms, false);
  }

  private record(kind: string, ms: number, error: boolean): void {
    const f = this.faults.get(kind) ?? { count: 0, errors: 0, totalMs: 0, maxMs: 0 };
    f.count++;
    if (error) f.errors++;
    f.totalMs += ms;
    f.maxMs = Math.max(f.maxMs, ms);
    this.faults.set(kind, f);
  }

  async snapshot(store: Store, agents: AgentRegistry): Promise<StatsSnapshot> {
    const links = agents.list();
    // The agents are asked all at once, while the tables are read.
    const statuses = Promise.all(links.map((l) => agentStatus(l)));
    const disks = await store.listDisks();
    const tables: Array<Omit<DiskStats, 'hosts'>> = [];
    for (const d of disks) tables.push({ name: d.name, sizeBytes: d.size, readOnly: d.readOnly, ...await tableSummary(store, d) });
    const answers = await statuses;
    return {
      uptimeS: Math.round((Date.now() - this.started) / 1000),
      faults: Object.fromEntries([...this.faults].map(([k, v]) => [k, { ...v, totalMs: Number(v.totalMs.toFixed(3)), maxMs: Number(v.maxMs.toFixed(3)) }])),
      containers: (await store.listContainers()).map((c) => ({ name: c.name, sizeBytes: c.size, usedBytes: c.usedBytes, failed: c.failed })),
      agents: links.map((l, i) => {
        const a = answers[i];
        const row: AgentStats = { hostId: l.hostId, leaseMs: l.leaseMs, connectedS: Math.round((Date.now() - l.since) / 1000) };
        if ('unanswered' in a) row.unanswered = a.unanswered;
        else row.suspended = a.suspended;
        return row;
      }),
      disks: disks.length,
      diskStats: tables.map((t) => ({
        ...t,
        hosts: links.flatMap((l, i) => {
          const a = answers[i];
          const held = 'disks' in a ? a.disks.find((x) => x.name === t.name) : undefined;
          return held ? [{ hostId: l.hostId, device: held.device, io: held.io, delays: held.delays, grants: held.grants }] : [];
        }),
      })),
    };
  }
}

type AgentAnswer = AgentStatusReport | { unanswered: string };

/** One agent's agent.status, reduced to what stats shows (agent-ops.ts reads the peer's answer field by field). */
async function agentStatus(l: AgentLink): Promise<AgentAnswer> {
  try {
    return await agentRequest(l.conn, 'agent.status', {}, { timeoutMs: AGENT_STATUS_TIMEOUT_MS });
  } catch (err) {
    return { unanswered: (err as Error).message };
  }
}

/** Allocation and Error entries of a disk's table, one stored chunk per turn (absent chunks are fill state). */
async function tableSummary(store: Store, d: Disk): Promise<{ allocatedBytes: number; errorSegments: number }> {
  let mapped = 0;
  let errors = 0;
  for await (const { data } of store.tables.chunks(d)) {
    for (let k = 0; k < data.length / ENTRY_BYTES; k++) {
      const e = decodeEntry(data, k);
      if (!isMapped(e)) continue;
      mapped++;
      if (e.states & STATE_ERROR) errors++;
    }
  }
  const alts = await store.db.get<{ n: number }>('SELECT count(*) AS n FROM alternates WHERE disk_id = ?', [d.id]);
  return { allocatedBytes: (mapped + (alts?.n ?? 0)) * d.segmentSize, errorSegments: errors };
}

/** Prometheus text exposition (version 0.0.4) of a snapshot. */
export function prometheusText(s: StatsSnapshot): string {
  const out: string[] = [];
  const label = (v: string) => v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
  const metric = (name: string, type: string, help: string, rows: Array<[string, number]>) => {
    out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
    for (const [labels, v] of rows) out.push(`${name}${labels} ${v}`);
  };
  const kinds = Object.entries(s.faults);
  metric('vdisk_faults_total', 'counter', 'Map faults answered, by kind.', kinds.map(([k, f]) => [`{kind="${label(k)}"}`, f.count]));
  metric('vdisk_fault_errors_total', 'counter', 'Map faults answered with an error, by kind.', kinds.map(([k, f]) => [`{kind="${label(k)}"}`, f.errors]));
  metric('vdisk_fault_seconds_total', 'counter', 'Time spent answering map faults, by kind.', kinds.map(([k, f]) => [`{kind="${label(k)}"}`, f.totalMs / 1000]));
  metric('vdisk_fault_seconds_max', 'gauge', 'Longest map fault answer since start, by kind.', kinds.map(([k, f]) => [`{kind="${label(k)}"}`, f.maxMs / 1000]));
  metric('vdisk_container_size_bytes', 'gauge', 'Container size.', s.containers.map((c) => [`{container="${label(c.name)}"}`, c.sizeBytes]));
  metric('vdisk_container_used_bytes', 'gauge', 'Container bytes allocated to segments.', s.containers.map((c) => [`{container="${label(c.name)}"}`, c.usedBytes]));
  metric('vdisk_container_failed', 'gauge', '1 if the container is marked failed.', s.containers.map((c) => [`{container="${label(c.name)}"}`, c.failed ? 1 : 0]));
  metric('vdisk_agent_connected_seconds', 'gauge', 'How long each connected agent has been connected.', s.agents.map((a) => [`{host="${label(a.hostId)}"}`, a.connectedS]));
  metric('vdisk_agent_lease_seconds', 'gauge', 'Each connected agent\'s lease.', s.agents.map((a) => [`{host="${label(a.hostId)}"}`, a.leaseMs / 1000]));
  metric('vdisk_agent_suspended', 'gauge', '1 if the agent has suspended its tables (its lease ran out).',
    s.agents.filter((a) => a.suspended !== undefined).map((a) => [`{host="${label(a.hostId)}"}`, a.suspended ? 1 : 0]));
  metric('vdisk_agent_unanswered', 'gauge', '1 if the agent did not answer the status request of this scrape.',
    s.agents.map((a) => [`{host="${label(a.hostId)}"}`, a.unanswered === undefined ? 0 : 1]));
  metric('vdisk_disks', 'gauge', 'Disks, snapshots and clones the controller knows.', [['', s.disks]]);
  const disk = (d: DiskStats) => `{disk="${label(d.name)}"}`;
  metric('vdisk_disk_size_bytes', 'gauge', 'Disk size.', s.diskStats.map((d) => [disk(d), d.sizeBytes]));
  metric('vdisk_disk_allocated_bytes', 'gauge', 'Bytes of segments the disk\'s table maps.', s.diskStats.map((d) => [disk(d), d.allocatedBytes]));
  metric('vdisk_disk_error_segments', 'gauge', 'Table entries in the Error state.', s.diskStats.map((d) => [disk(d), d.errorSegments]));
  const served = s.diskStats.flatMap((d) => d.hosts.filter((h) => h.io !== null).map((h) => ({ labels: `{disk="${label(d.name)}",host="${label(h.hostId)}"}`, io: h.io as IoCounts })));
  const io: Array<[string, keyof IoCounts, string]> = [
    ['vdisk_disk_reads_total', 'reads', 'Read requests served, by disk and host.'],
    ['vdisk_disk_read_bytes_total', 'readBytes', 'Bytes read, by disk and host.'],
    ['vdisk_disk_writes_total', 'writes', 'Write requests served, by disk and host.'],
    ['vdisk_disk_written_bytes_total', 'writeBytes', 'Bytes written, by disk and host.'],
    ['vdisk_disk_discards_total', 'discards', 'Discard and write-zeroes requests, by disk and host.'],
    ['vdisk_disk_discarded_bytes_total', 'discardBytes', 'Bytes discarded or zeroed, by disk and host.'],
    ['vdisk_disk_flushes_total', 'flushes', 'Flush requests, by disk and host.'],
    ['vdisk_disk_io_errors_total', 'errors', 'Requests completed with an error, by disk and host.'],
    ['vdisk_disk_faults_total', 'faults', 'Requests that faulted to the controller, by disk and host.'],
  ];
  for (const [name, field, help] of io) metric(name, 'counter', help, served.map((r) => [r.labels, r.io[field]]));
  const delayed = s.diskStats.flatMap((d) => d.hosts.filter((h) => h.delays !== null).map((h) => ({ labels: `disk="${label(d.name)}",host="${label(h.hostId)}"`, delays: h.delays as DelayCounts })));
  metric('vdisk_disk_delayed_faults', 'gauge', 'Faults parked on a delay (a held segment), by disk and host.', delayed.map((r) => [`{${r.labels}}`, r.delays.parked]));
  metric('vdisk_disk_delays_ended_total', 'counter', 'Delays ended, by the controller\'s cancel or by running out, by disk and host.',
    delayed.flatMap((r) => [[`{${r.labels},how="cancelled"}`, r.delays.cancelled], [`{${r.labels},how="expired"}`, r.delays.expired]]));
  metric('vdisk_controller_uptime_seconds', 'gauge', 'Seconds since the controller started.', [['', s.uptimeS]]);
  return `${out.join('\n')}\n`;
}

/** An HTTP listener serving GET /metrics; resolves once it listens (port 0 picks one: see address()). */
export function serveMetrics(host: string, port: number, snapshot: () => Promise<StatsSnapshot>): Promise<http.Server> {
  const server = http.createServer((req, res) => {
    if (req.method !== 'GET' || req.url?.split('?')[0] !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('only GET /metrics\n');
      return;
    }
    snapshot().then((s) => {
      res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' }).end(prometheusText(s));
    }, (err: Error) => {
      res.writeHead(500, { 'content-type': 'text/plain' }).end(`${err.message}\n`);
    });
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => { server.off('error', reject); resolve(server); });
  });
}
