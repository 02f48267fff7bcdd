// The controller's metrics: map faults by kind (count, time to answer), containers (size, used, failed),
// agents (connected, lease), as one snapshot for `vdisk stats` and as Prometheus text for a scraper
// (`vdisk controller start --metrics HOST:PORT`). Counting is a few additions per fault: nothing per I/O.
import http from 'node:http';
import { FAULT_DISCARD, FAULT_READ, FAULT_RECLAIM, FAULT_WRITE } from '../io/translator.js';
import type { AgentRegistry } from './agents.js';
import type { Store } from './store.js';

const KINDS: Record<number, string> = { [FAULT_READ]: 'read', [FAULT_WRITE]: 'write', [FAULT_DISCARD]: 'discard', [FAULT_RECLAIM]: 'reclaim' };

export interface FaultStats { count: number; errors: number; totalMs: number; maxMs: number }
export interface StatsSnapshot {
  uptimeS: number;
  faults: Record<string, FaultStats>;
  containers: Array<{ name: string; sizeBytes: number; usedBytes: number; failed: boolean }>;
  agents: Array<{ hostId: string; leaseMs: number; connectedS: number }>;
  disks: number;
}

export class Metrics {
  private readonly started = Date.now();
  private readonly faults = new Map<string, FaultStats>();

  /** One answered fault: its kind, how long the answer took, and whether it was an error answer. */
  fault(op: number, ms: number, error: boolean): void {
    const kind = KINDS[op] ?? 'other';
    const f = this.faults.get(kind) ?? { count: 0, errors: 0, totalMs: 0, maxMs: 0 };
    f.count++;
    if (error) f.errors++;
    f.totalMs += ms;
    f.maxMs = Math.max(f.maxMs, ms);
    this.faults.set(kind, f);
  }

  async snapshot(store: Store, agents: AgentRegistry): Promise<StatsSnapshot> {
    return {
      uptimeS: Math.round((Date.now() - this.started) / 1000),
      faults: Object.fromEntries([...this.faults].map(([k, v]) => [k, { ...v, totalMs: Number(v.totalMs.toFixed(3)), maxMs: Number(v.maxMs.toFixed(3)) }])),
      containers: (await store.listContainers()).map((c) => ({ name: c.name, sizeBytes: c.size, usedBytes: c.usedBytes, failed: c.failed })),
      agents: agents.list().map((l) => ({ hostId: l.hostId, leaseMs: l.leaseMs, connectedS: Math.round((Date.now() - l.since) / 1000) })),
      disks: (await store.listDisks()).length,
    };
  }
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
  metric('vdisk_disks', 'gauge', 'Disks, snapshots and clones the controller knows.', [['', s.disks]]);
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
