// The snapshot benchmarks' ublk-free part, natively on the host: snapshot requests of an attached 1 TiB thin
// disk and of a thick one (a stand-in agent holds them and applies the blocking No-write), the controller's
// side of copy-on-write faults (--partial copy and bitmap), and a 10-deep chain of snapshot + clone.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { VdiskError } from '../errors.js';
import { FAULT_WRITE } from '../protocol/fault-ops.js';
import { controllerRequest } from '../protocol/agent-ops.js';
import { STATE_NO_WRITE } from '../table/mapping-table.js';
import { DATA_AT, fillRandom, fsType, GiB, MiB } from './exec.js';
import { DEPTH, QUEUES } from './host-controller.js';
import { mean, median, round, sec, thousands, whereAmI, type Row } from './report.js';
import { BenchSession, NO_DEVICE_HOST } from './session.js';

export const CHAIN = 10;
export const SNAPSHOT_TARGET_MS = 200;

interface SnapRuns { ms: number; agentStatesMs: number; runsMs: number[] }
export interface CowFaults { partial: string; concurrency: number; faults: number; elapsedMs: number; faultsPerSec: number; meanMs: number; p99Ms: number; usedGrowthBytes: number; growthOk: boolean }
export interface HostSnapshot {
  fsType: string; cliStartupMs: number;
  thin: { snapshotAttached: SnapRuns; snapshotCliMs: number; snapshotDetachedMs: number; cloneMs: number };
  thick: { size: number; mappedEntries: number; createRequestMs: number; snapshotAttached: SnapRuns; perMappedEntryUs: number;
    cow: CowFaults[]; chain: Array<{ generation: number; snapshotMs: number; cloneMs: number }>; checkOk: boolean; rmSnapshotRequestMs: number };
}

async function usedBytes(s: BenchSession): Promise<number> {
  return (await s.cliJson<Array<{ usedBytes: number }>>('container', 'ls')).reduce((a, c) => a + c.usedBytes, 0);
}

export async function hostSnapshotBench(o: { cows: number; thickGiB?: number; log: (m: string) => void }): Promise<HostSnapshot> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vdisk-bench-snap-'));
  const s = new BenchSession(path.join(dir, 'data'));
  await s.cli('controller', 'start');
  const pid = (await s.cliJson<{ pid: number }>('controller', 'status')).pid;
  const agent = await s.standIn();
  const attached = new Set<string>();
  const attach = async (name: string) => {
    const r = await s.rpc('disk.attach', { name, hostId: NO_DEVICE_HOST, queues: QUEUES, depth: DEPTH });
    attached.add(name);
    return r.ms;
  };
  const detach = async (name: string) => {
    await s.rpc('disk.detach', { name, hostId: NO_DEVICE_HOST, force: false });
    attached.delete(name);
  };
  /** n snapshots of an attached disk as requests, and the stand-in agent's table.states time of each. */
  const snapshots = async (disk: string, n: number, prefix: string): Promise<SnapRuns> => {
    const runs: Array<{ ms: number; agentStatesMs: number }> = [];
    for (let i = 0; i < n; i++) {
      agent.marks.tableStates = undefined;
      const r = await s.rpc<{ segments: number }>('disk.snapshot', { name: disk, snapshot: `${prefix}${i}` });
      const st = agent.marks.tableStates as { count: number; blocking: boolean; ms: number } | undefined;
      if (!st || st.count !== r.result.segments || !st.blocking) throw new VdiskError(`snapshot of ${disk}: the agent got ${JSON.stringify(st)}`, { code: 'EPROTO' });
      runs.push({ ms: r.ms, agentStatesMs: st.ms });
    }
    return { ms: median(runs.map((r) => r.ms)), agentStatesMs: median(runs.map((r) => r.agentStatesMs)), runsMs: runs.map((r) => r.ms) };
  };
  try {
    const cliStartupMs = (await s.cliStartup()).median;

    // ---- an empty thin 1 TiB disk, attached
    await s.cli('container', 'add', 'big', '--path', path.join(dir, 'big.img'), '--size', '2G');
    await s.cli('create', 'thin', '--size', '1T', '--segment-size', '1M', '--container', 'big');
    await attach('thin');
    const thinSnap = await snapshots('thin', 3, 'thin-s');
    const snapshotCliMs = (await s.cli('snapshot', 'thin', 'thin-cli')).ms;
    await detach('thin');
    const snapshotDetachedMs = (await s.rpc('disk.snapshot', { name: 'thin', snapshot: 'thin-d' })).ms;
    const cloneMs = (await s.rpc('disk.clone', { snapshot: 'thin-d', name: 'thin-c' })).ms;
    for (const n of ['thin-c', 'thin-d', 'thin-cli', 'thin-s0', 'thin-s1', 'thin-s2', 'thin']) await s.rpc('disk.rm', { name: n });
    o.log(`host snapshot: 1 TiB thin attached ${thinSnap.ms} ms (agent's table.states ${thinSnap.agentStatesMs} ms), detached ${snapshotDetachedMs} ms`);

    // ---- a thick disk (1 TiB by default) on a sparse container, attached, with room for the copies
    const thickSize = (o.thickGiB ?? 1024) * GiB;
    const thickFile = path.join(dir, 'thick.img');
    // The label's reserve (1 MiB) comes first: the disk, then room for the copies, after it.
    await s.cli('container', 'add', 'thick', '--path', thickFile, '--size', String(DATA_AT + thickSize + 4 * o.cows * MiB));
    const createRequestMs = (await s.rpc('disk.create', { name: 'thick', size: thickSize, segmentSize: MiB, container: 'thick', thick: true, partial: 'copy' })).ms;
    await attach('thick');
    const thickSnap = await snapshots('thick', 3, 'thick-s');
    const mappedEntries = thickSize / MiB;
    o.log(`host snapshot: thick ${thickSize / GiB} GiB created in ${createRequestMs} ms, snapshot attached ${thickSnap.ms} ms`);

    // ---- the controller's side of the first write after a snapshot: write faults for one 4 KiB piece of
    // No-write segments. The thick disk is --partial copy (1 MiB copied); a clone of its snapshot is bitmap (4 KiB).
    fillRandom(thickFile, DATA_AT, 2 * o.cows * MiB); // thick allocation starts after the label's reserve: segment i is the file's MiB i + 1
    await s.rpc('disk.clone', { snapshot: 'thick-s0', name: 'thick-b', partial: 'bitmap' });
    await attach('thick-b');
    const cow: CowFaults[] = [];
    for (const [disk, partial] of [['thick', 'copy'], ['thick-b', 'bitmap']] as const) {
      const { id } = (await s.rpc<{ id: number }>('disk.info', { name: disk })).result;
      for (const [i, c] of [1, 16].entries()) {
        const before = await usedBytes(s);
        let next = i * o.cows;
        const lat: number[] = [];
        const t0 = performance.now();
        await Promise.all(Array.from({ length: c }, async () => {
          while (next < (i + 1) * o.cows) {
            const segment = next++;
            const offset = Math.floor(Math.random() * 256) * 4096;
            const t1 = performance.now();
            const r = await controllerRequest(agent.conn, 'fault', { diskId: id, op: FAULT_WRITE, segment, states: STATE_NO_WRITE, offset, length: 4096 }, { timeoutMs: 0 });
            lat.push(performance.now() - t1);
            const ok = r.action === 'entry' && !(r.entry.states & STATE_NO_WRITE) && (partial === 'bitmap') === (r.alternate !== undefined);
            if (!ok) throw new VdiskError(`COW fault on ${disk} segment ${segment}: ${JSON.stringify(r)}`, { code: 'EPROTO' });
          }
        }));
        const ms = performance.now() - t0;
        const growth = (await usedBytes(s)) - before;
        lat.sort((x, y) => x - y);
        cow.push({ partial, concurrency: c, faults: o.cows, elapsedMs: round(ms, 1), faultsPerSec: Math.round(o.cows / (ms / 1000)),
          meanMs: round(mean(lat), 2), p99Ms: round(lat[Math.min(lat.length - 1, Math.ceil(lat.length * 0.99) - 1)]!, 2),
          usedGrowthBytes: growth, growthOk: growth === o.cows * MiB });
      }
    }
    o.log(`host snapshot: controller-side COW faults ${cow.map((f) => `${f.partial} ${f.faultsPerSec}/s at ${f.concurrency}`).join(', ')}`);
    await detach('thick-b');
    await s.rpc('disk.rm', { name: 'thick-b' });
    await detach('thick');

    // ---- a 10-deep chain (each generation: snapshot of the previous, then a clone of it)
    const chain: HostSnapshot['thick']['chain'] = [];
    let prev = 'thick';
    for (let g = 1; g <= CHAIN; g++) {
      const sn = (await s.rpc('disk.snapshot', { name: prev, snapshot: `g${g}s` })).ms;
      const cl = (await s.rpc('disk.clone', { snapshot: `g${g}s`, name: `g${g}` })).ms;
      chain.push({ generation: g, snapshotMs: sn, cloneMs: cl });
      prev = `g${g}`;
    }
    await s.cli('check'); // exits 2 (and throws) on any inconsistency
    const rmSnapshotRequestMs = (await s.rpc('disk.rm', { name: 'thick-s0' })).ms;
    return {
      fsType: fsType(dir), cliStartupMs,
      thin: { snapshotAttached: thinSnap, snapshotCliMs, snapshotDetachedMs, cloneMs },
      thick: { size: thickSize, mappedEntries, createRequestMs, snapshotAttached: thickSnap,
        perMappedEntryUs: round((thickSnap.ms - thinSnap.ms) * 1000 / mappedEntries, 2), cow, chain, checkOk: true, rmSnapshotRequestMs },
    };
  } finally {
    for (const name of attached) await detach(name).catch((e: Error) => o.log(`cleanup: ${e.message}`));
    await agent.close().catch(() => {});
    await s.stopController(pid, o.log);
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

export function hostSnapshotRows(h: HostSnapshot): Row[] {
  const section = `snapshots, natively (stand-in agent attached, no ublk; ${h.fsType})`;
  const where = whereAmI() === 'VM' ? 'VM' : 'host';
  const t = h.thin;
  const k = h.thick;
  const g = `${k.size / GiB} GiB`;
  const n = thousands(k.mappedEntries);
  const snap = (name: string, ms: number): Row => ({ section, where, name, value: sec(ms), figure: ms, target: `< ${SNAPSHOT_TARGET_MS / 1000} s`, met: ms < SNAPSHOT_TARGET_MS });
  const rows: Row[] = [
    snap('1 TiB thin, empty: snapshot, attached (request, median of 3)', t.snapshotAttached.ms),
    { section, where, name: '  of which the agent: No-write on 1,048,576 entries, blocking', value: sec(t.snapshotAttached.agentStatesMs) },
    { section, where, name: '  the same disk detached (store only, request)', value: sec(t.snapshotDetachedMs) },
    { section, where, name: '  CLI wall, minus CLI start-up', value: sec(t.snapshotCliMs - h.cliStartupMs) },
    { section, where, name: `${g} thick (${n} mapped entries): create (request)`, value: sec(k.createRequestMs) },
    snap(`${g} thick: snapshot, attached (request, median of 3)`, k.snapshotAttached.ms),
    { section, where, name: `  of which the agent: No-write on ${n} entries, blocking`, value: sec(k.snapshotAttached.agentStatesMs) },
    { section, where, name: '  cost per mapped entry (over the empty thin one)', value: `${k.perMappedEntryUs} us` },
  ];
  for (const f of k.cow) {
    rows.push({ section, where, name: `controller-side COW faults, 4k piece, --partial ${f.partial} (${f.partial === 'copy' ? '1 MiB' : '4 KiB'} copied), ${f.concurrency} at a time (${f.faults})`,
      value: `${thousands(f.faultsPerSec)} /s, mean ${f.meanMs} ms`, figure: f.faultsPerSec });
    rows.push({ section, where, name: '  used bytes grew one segment per fault', value: f.growthOk ? 'yes' : 'NO', target: 'yes', met: f.growthOk });
  }
  rows.push({ section, where, name: `${g} chain of ${CHAIN}: snapshot + clone per generation (median)`, value: sec(median(k.chain.map((c) => c.snapshotMs + c.cloneMs))) });
  rows.push({ section, where, name: `${g}: rm of a snapshot (compares ${n} entries with its family)`, value: sec(k.rmSnapshotRequestMs) });
  rows.push({ section, where, name: 'vdisk check after all that', value: k.checkOk ? 'consistent' : 'FAILED', target: 'exit 0', met: k.checkOk });
  return rows;
}
