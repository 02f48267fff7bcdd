// The controller's ublk-free part, natively on the host (under TCG absolute times say little): a 1 TiB thin
// disk's create and its attach through a stand-in agent (bulk table load, no device start), and the
// controller's side of allocating map faults at 1, 16 and 64 at a time (issue target: >= 10,000/s at 64). With
// `tls`, the same attach and faults again with the stand-in over the controller's TLS listener (loopback).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import type { DiskInfo } from '../controller/store.js';
import { DATA_AT, fsType, MiB } from './exec.js';
import { ratioRow, sec, thousands, whereAmI, type Row } from './report.js';
import type { TlsEndpoint } from '../protocol/client.js';
import { BenchSession, elapsed, NO_DEVICE_HOST, type FaultRun } from './session.js';
import { hostEndpoint, LISTEN_ARGS, TLS_STANDIN_HOST, tlsPort } from './tls.js';

export const BIG_SIZE = 2 ** 40;
export const THIN_SIZE = 2 * 1024 * MiB;
export const QUEUES = 1;
export const DEPTH = 128;
export const FAULT_CONCURRENCY = [1, 16, 64];
const FAULTS_TARGET = 10_000;

export interface AttachWithoutDevice {
  ms: number; msWithConnect: number; entries: number;
  tableCreateAtMs: number; tableCreateMs: number; tableSetAtMs: number; tableLoadMs: number; deviceStartAtMs: number;
}

/**
 * Attach through a stand-in agent: the controller's whole attach flow (attachment records, containers, table
 * create, bulk table.set) with the agent's real table, START_DEV answered at once, then detach. `via`: the
 * stand-in is connected over TLS (the request still comes from the CLI's Unix socket).
 */
export async function attachWithoutDevice(s: BenchSession, name: string, via?: TlsEndpoint): Promise<AttachWithoutDevice> {
  const agent = await s.standIn({ via });
  const hostId = via?.credential.hostId ?? NO_DEVICE_HOST;
  try {
    const t0 = performance.now();
    const r = await s.rpc('disk.attach', { name, hostId, queues: QUEUES, depth: DEPTH });
    const total = elapsed(t0);
    await s.rpc('disk.detach', { name, hostId, force: false });
    const m = agent.marks;
    const at = (t: number | undefined) => Number(((t ?? NaN) - t0).toFixed(1));
    const span = (a: number | undefined, b: number | undefined) => Number(((b ?? NaN) - (a ?? NaN)).toFixed(1));
    return {
      ms: r.ms, msWithConnect: total, entries: m.entries ?? 0,
      tableCreateAtMs: at(m.tableCreate), tableCreateMs: span(m.tableCreate, m.tableCreated),
      tableSetAtMs: at(m.tableSet), tableLoadMs: span(m.tableSet, m.tableLoaded), deviceStartAtMs: at(m.deviceStart),
    };
  } finally {
    await agent.close();
  }
}

export interface HostController {
  dir: string; fsType: string; cliStartupMs: number; createCliMs: number; createRequestMs: number;
  attachWithoutDevice: AttachWithoutDevice & { runsMs: number[] }; rmRequestMs: number;
  faults: FaultRun[]; faultsAllocatedOk: boolean;
  /** The same over TLS on loopback (with `tls`): attach median of 3, faults at the same counts. */
  tls?: { attachWithoutDevice: AttachWithoutDevice & { runsMs: number[] }; faults: FaultRun[] };
}

const median3 = (runs: AttachWithoutDevice[]) => ({ ...[...runs].sort((a, b) => a.ms - b.ms)[1]!, runsMs: runs.map((r) => r.ms) });

export async function hostControllerBench(o: { faults: number; tls?: boolean; log: (m: string) => void }): Promise<HostController> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vdisk-bench-'));
  const s = new BenchSession(path.join(dir, 'data'));
  await s.cli('controller', 'start', ...(o.tls ? LISTEN_ARGS : []));
  const pid = (await s.cliJson<{ pid: number }>('controller', 'status')).pid;
  try {
    const via = o.tls ? await hostEndpoint(s.env, await tlsPort(s.env), TLS_STANDIN_HOST, dir) : undefined;
    const cliStartupMs = (await s.cliStartup()).median;
    await s.cli('container', 'add', 'big', '--path', path.join(dir, 'big.img'), '--size', '2G');
    const createCliMs = (await s.cli('create', 'big1', '--size', '1T', '--segment-size', '1M', '--container', 'big')).ms;
    const createRequestMs = (await s.rpc('disk.create', { name: 'big2', size: BIG_SIZE, segmentSize: MiB, container: 'big', thick: false })).ms;
    // Unix socket and TLS alternate, so both see the same state of the host.
    const runs: AttachWithoutDevice[] = [];
    const tlsRuns: AttachWithoutDevice[] = [];
    for (let i = 0; i < 3; i++) {
      runs.push(await attachWithoutDevice(s, 'big1'));
      if (via) tlsRuns.push(await attachWithoutDevice(s, 'big1', via));
    }
    const mid = median3(runs);
    const rmRequestMs = (await s.rpc('disk.rm', { name: 'big2' })).ms;
    await s.cli('rm', 'big1');
    // Room for every run's faults (each on both transports with TLS): one 1 MiB segment each.
    const runsOfFaults = FAULT_CONCURRENCY.length * (via ? 2 : 1);
    const size = Math.max(THIN_SIZE, runsOfFaults * o.faults * MiB);
    // The container: that and the label's reserve (the faults may fill the disk).
    await s.cli('container', 'add', 'thin', '--path', path.join(dir, 'thin.img'), '--size', String(DATA_AT + size));
    await s.cli('create', 'faults', '--size', String(size), '--segment-size', '1M', '--container', 'thin');
    const faults: FaultRun[] = [];
    const tlsFaults: FaultRun[] = [];
    for (const [i, c] of FAULT_CONCURRENCY.entries()) {
      faults.push(await s.faults('faults', i * o.faults, o.faults, c));
      if (via) tlsFaults.push(await s.faults('faults', (FAULT_CONCURRENCY.length + i) * o.faults, o.faults, c, via));
    }
    const info = await s.cliJson<DiskInfo>('info', 'faults');
    const faultsAllocatedOk = info.allocatedBytes === runsOfFaults * o.faults * MiB;
    await s.cli('rm', 'faults');
    o.log(`host: attach without device start ${mid.ms} ms (median of 3), create ${createRequestMs} ms request; ` +
      `controller-side faults ${faults.map((f) => `${f.faultsPerSec}/s at ${f.concurrency}`).join(', ')}` +
      (via ? `; over TLS: attach ${median3(tlsRuns).ms} ms, faults ${tlsFaults.map((f) => `${f.faultsPerSec}/s at ${f.concurrency}`).join(', ')}` : ''));
    return {
      dir, fsType: fsType(dir), cliStartupMs, createCliMs, createRequestMs, attachWithoutDevice: mid,
      rmRequestMs, faults, faultsAllocatedOk, ...(via ? { tls: { attachWithoutDevice: median3(tlsRuns), faults: tlsFaults } } : {}),
    };
  } finally {
    await s.stopController(pid, o.log);
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

export function hostControllerRows(h: HostController): Row[] {
  const section = `controller, natively (no ublk needed; ${h.fsType})`;
  const where = whereAmI() === 'VM' ? 'VM' : 'host';
  const a = h.attachWithoutDevice;
  const rows: Row[] = [
    { section, where, name: 'CLI start-up (vdisk controller status, median of 3)', value: sec(h.cliStartupMs) },
    { section, where, name: '1 TiB thin create, CLI wall (node start included)', value: sec(h.createCliMs) },
    { section, where, name: '1 TiB thin create, request on the socket', value: sec(h.createRequestMs) },
    { section, where, name: '1 TiB attach, request without device start (median of 3)', value: sec(a.ms), figure: a.ms, target: '< 0.5 s', met: a.ms < 500 },
    { section, where, name: '  of which the agent creating its all-Invalid table', value: sec(a.tableCreateMs) },
    { section, where, name: `  of which the agent loading ${thousands(a.entries)} entries`, value: sec(a.tableLoadMs) },
    ...(h.tls ? [tlsAttachRow(section, where, h.tls.attachWithoutDevice, a)] : []),
    { section, where, name: '1 TiB thin rm, request', value: sec(h.rmRequestMs) },
  ];
  for (const f of h.faults) {
    const row: Row = { section, where, name: `controller-side allocating faults, ${f.concurrency} at a time (${f.faults})`, value: `${thousands(f.faultsPerSec)} /s`, figure: f.faultsPerSec };
    if (f.concurrency === 64) { row.target = `>= ${thousands(FAULTS_TARGET)} /s`; row.met = f.faultsPerSec >= FAULTS_TARGET; }
    rows.push(row);
  }
  for (const [i, f] of (h.tls?.faults ?? []).entries()) {
    rows.push(ratioRow(section, where, `controller-side allocating faults, ${f.concurrency} at a time (${f.faults}): TLS / Unix socket`,
      f.faultsPerSec, h.faults[i]!.faultsPerSec, '/s'));
  }
  rows.push({ section, where, name: '  allocated bytes = one segment per fault', value: h.faultsAllocatedOk ? 'yes' : 'NO', target: 'yes', met: h.faultsAllocatedOk });
  return rows;
}

function tlsAttachRow(section: string, where: Row['where'], t: AttachWithoutDevice, unix: AttachWithoutDevice): Row {
  return { section, where, name: '1 TiB attach, the same with the agent over TLS (loopback; median of 3)',
    value: `${sec(t.ms)} (Unix socket ${sec(unix.ms)})`, figure: t.ms, target: '< 0.5 s', met: t.ms < 500 };
}
