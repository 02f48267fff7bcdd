// The snapshot benchmarks where ublk exists, with the real agent and devices: a 1 TiB thin disk's snapshot
// while attached; a 10-deep clone chain read against its origin; the first 4k write after a snapshot per
// --partial mode (latency, space amplification); and sequential copy-on-write first writes against steady
// writes over the same range of the same clone (issue target >= 0.5).
import fs from 'node:fs';
import path from 'node:path';
import type { DiskInfo } from '../controller/store.js';
import { VdiskError } from '../errors.js';
import { DATA_AT, fioOnePerSegment, fioRand, fioSeqWrite, MiB, physicalBytes, readDirect, readFileMiB, sameData, wipeLeftLabel, type FirstWrites, type RandResult, type SeqResult } from './exec.js';
import { DEPTH, QUEUES } from './host-controller.js';
import { mean, ratioRow, round, sec, thousands, type Row, type Where } from './report.js';
import { BenchSession } from './session.js';
import { CHAIN, SNAPSHOT_TARGET_MS } from './host-snapshot.js';

const HOST = 'bench-snap';
/** The COW sequential rows: the region written twice, and the write sizes (1 MiB: whole segments, nothing copied). */
const cowSeqMiB = (cows: number) => Math.min(256, 4 * cows);
const COW_SEQ_TARGET = 0.5;

interface CowRun extends FirstWrites { usedGrowthBytes: number; physicalGrowthBytes: number; spaceAmplification: number; physicalAmplification: number; growthOk: boolean }
interface CowMode { runs: CowRun[]; rewrite: FirstWrites; sharedUnchanged: boolean; cloneChanged: boolean; alternates: number; foldCliMs?: number }
export interface VmSnapshot {
  thin: { runsMs: number[]; ms: number; cliMs: number };
  chain: { lastSameDataAsFile: boolean; runs: { origin: RandResult[]; clone: RandResult[] }; originIops: number; cloneIops: number };
  cow: { snapshotRequestMs: number; entries: number; modes: Record<string, CowMode> };
  cowSequential: Array<{ bs: string; sizeMiB: number; first: SeqResult; steady: SeqResult }>;
  checkOk: boolean;
}

async function usedBytes(s: BenchSession): Promise<number> {
  return (await s.cliJson<Array<{ usedBytes: number }>>('container', 'ls')).reduce((a, c) => a + c.usedBytes, 0);
}

/** o.file: the bench's 1 GiB file of random data, in o.dir. */
export async function vmSnapshotBench(o: { dir: string; file: string; runtime: number; rounds: number; cows: number; log: (m: string) => void }): Promise<VmSnapshot> {
  const s = new BenchSession(path.join(o.dir, 'bench-snap-data'));
  const spare = path.join(o.dir, 'bench-snap-spare.img');
  const attached = new Set<string>();
  let agentStarted = false;
  let ok = false;
  const attach = async (name: string) => {
    const r = await s.cliJson<{ device: string }>('attach', name, '--host-id', HOST, '--queues', String(QUEUES), '--depth', String(DEPTH));
    attached.add(name);
    return r.device;
  };
  const detach = async (name: string) => { await s.cli('detach', name); attached.delete(name); };
  await s.cli('controller', 'start');
  const pid = (await s.cliJson<{ pid: number }>('controller', 'status')).pid;
  try {
    await s.cli('agent', 'start', '--host-id', HOST);
    agentStarted = true;

    // ---- a 1 TiB thin disk, attached with its device started: snapshot requests
    await s.cli('container', 'add', 'big', '--path', path.join(o.dir, 'bench-snap-big.img'), '--size', '2G');
    await s.cli('create', 'thin', '--size', '1T', '--segment-size', '1M', '--container', 'big');
    await attach('thin');
    const runsMs: number[] = [];
    for (let i = 0; i < 2; i++) runsMs.push((await s.rpc('disk.snapshot', { name: 'thin', snapshot: `thin-s${i}` })).ms);
    const cliMs = (await s.cli('snapshot', 'thin', 'thin-cli')).ms;
    await detach('thin');
    for (const n of ['thin-s0', 'thin-s1', 'thin-cli', 'thin']) await s.cli('rm', n);
    await s.cli('container', 'rm', 'big'); // so that the origin (no --container: containers in id order) fills the bench file
    o.log(`snapshot: 1 TiB thin attached ${runsMs.join(', ')} ms as requests`);

    // ---- the origin: a thick disk on the bench file, after the label's reserve (segment i is the file's
    // MiB i + 1) and filling the rest of it; copies go to a spare container
    const size = fs.statSync(o.file).size - DATA_AT;
    await s.cli('container', 'add', 'data', '--path', o.file);
    await s.cli('container', 'add', 'spare', '--path', spare, '--size', '3G');
    await s.cli('create', 'origin', '--size', String(size), '--segment-size', '1M', '--thick');
    const oinfo = await s.cliJson<DiskInfo>('info', 'origin');
    if (oinfo.perContainer.data !== size || Object.keys(oinfo.perContainer).length !== 1) {
      throw new VdiskError(`the origin is not all on the bench file: ${JSON.stringify(oinfo.perContainer)}`, { code: 'EIO' });
    }

    // ---- a chain of 10 clones, read against the origin
    o.log(`snapshot: a chain of ${CHAIN} clones, 4k randread on the last one vs the origin`);
    let prev = 'origin';
    for (let g = 1; g <= CHAIN; g++) {
      await s.rpc('disk.snapshot', { name: prev, snapshot: `g${g}s` });
      await s.rpc('disk.clone', { snapshot: `g${g}s`, name: `g${g}` });
      prev = `g${g}`;
    }
    const originDev = await attach('origin');
    const lastDev = await attach(prev);
    const lastSameDataAsFile = sameData(lastDev, o.file, size, DATA_AT);
    const chainRuns = { origin: [] as RandResult[], clone: [] as RandResult[] };
    for (let r = 0; r < o.rounds; r++) {
      for (const which of r % 2 === 0 ? ['origin', 'clone'] as const : ['clone', 'origin'] as const) {
        chainRuns[which].push(fioRand(which === 'origin' ? originDev : lastDev, 'randread', o.runtime));
      }
    }
    const chain = { lastSameDataAsFile, runs: chainRuns, originIops: Math.round(mean(chainRuns.origin.map((x) => x.iops))), cloneIops: Math.round(mean(chainRuns.clone.map((x) => x.iops))) };
    o.log(`snapshot: randread origin ${chain.originIops}, clone ${CHAIN} ${chain.cloneIops} IOPS`);

    // ---- first 4k writes after a snapshot: one clone per --partial mode, written the same way
    const snapshotRequestMs = (await s.rpc('disk.snapshot', { name: 'origin', snapshot: 'cow-snap' })).ms;
    const modes: Record<string, CowMode> = {};
    for (const partial of ['copy', 'bitmap']) {
      const name = `cow-${partial}`;
      await s.rpc('disk.clone', { snapshot: 'cow-snap', name, partial });
      const dev = await attach(name);
      const runs: CowRun[] = [];
      for (const [i, qd] of [1, 16].entries()) {
        const before = await usedBytes(s);
        const physBefore = physicalBytes(spare);
        const w = fioOnePerSegment(dev, i * o.cows, o.cows, qd);
        const usedGrowthBytes = (await usedBytes(s)) - before;
        const physicalGrowthBytes = physicalBytes(spare) - physBefore;
        const written = w.ios * 4096;
        runs.push({ ...w, usedGrowthBytes, physicalGrowthBytes, spaceAmplification: round(usedGrowthBytes / written, 1),
          physicalAmplification: round(physicalGrowthBytes / written, 1), growthOk: usedGrowthBytes === o.cows * MiB && w.ios === o.cows });
        o.log(`snapshot: --partial ${partial} first 4k writes at QD ${qd}: ${w.iops}/s, mean ${w.clatMeanMs} ms`);
      }
      const rewrite = fioOnePerSegment(dev, 0, o.cows, 1);
      const n = Math.min(4, o.cows);
      const fileAt = (first: number) => readFileMiB(o.file, first + DATA_AT / MiB, n);
      const sharedUnchanged = [0, o.cows].every((first) => readDirect(lastDev, first, n).equals(fileAt(first)));
      const cloneChanged = [0, o.cows].every((first) => !readDirect(dev, first, n).equals(fileAt(first)));
      const alternates = (await s.cliJson<DiskInfo>('info', name)).alternates;
      const mode: CowMode = { runs, rewrite, sharedUnchanged, cloneChanged, alternates };
      if (partial === 'bitmap') mode.foldCliMs = (await s.cli('fold', name, '--json')).ms;
      await detach(name);
      modes[partial] = mode;
    }

    // ---- sequential first writes into shared segments against steady writes over the same range: 256 KiB
    // writes (the first of each segment copies it, --partial copy) and 1 MiB writes (whole segments: no copy)
    const cowSequential: VmSnapshot['cowSequential'] = [];
    await s.rpc('disk.clone', { snapshot: 'cow-snap', name: 'cow-seq', partial: 'copy' });
    const seqDev = await attach('cow-seq');
    const seqMiB = cowSeqMiB(o.cows);
    for (const [i, bs] of ['256k', '1M'].entries()) {
      const first = fioSeqWrite(seqDev, `cow-first-${bs}`, bs, i * seqMiB, seqMiB);
      const steady = fioSeqWrite(seqDev, `cow-steady-${bs}`, bs, i * seqMiB, seqMiB);
      cowSequential.push({ bs, sizeMiB: seqMiB, first, steady });
      o.log(`snapshot: sequential ${bs} after a snapshot ${first.mbPerSec} MB/s, steady ${steady.mbPerSec} MB/s`);
    }
    await detach('cow-seq');
    await detach(prev);
    await detach('origin');
    await s.cli('check');
    ok = true;
    return {
      thin: { runsMs, ms: Math.min(...runsMs), cliMs }, chain, cow: { snapshotRequestMs, entries: size / MiB, modes }, cowSequential, checkOk: true,
    };
  } finally {
    for (const name of attached) await s.cli('detach', name).catch((e: Error) => o.log(`cleanup: ${e.message}`));
    if (agentStarted) await s.cli('agent', 'stop', '--host-id', HOST).catch((e: Error) => o.log(`cleanup: ${e.message}`));
    await s.stopController(pid, o.log);
    for (const f of [spare, path.join(o.dir, 'bench-snap-big.img')]) fs.rmSync(f, { force: true });
    // The bench file keeps the label of 'data' (its controller's data goes, no `container rm` is coming):
    // wiped, so that a next run can add it again.
    try { if (wipeLeftLabel(o.file)) o.log(`snapshot: wiped the label on ${o.file}`); } catch (e) { o.log(`cleanup: ${(e as Error).message}`); }
    if (ok) fs.rmSync(s.dataDir, { recursive: true, force: true });
    else o.log(`snapshot: the controller's data and logs stay in ${s.dataDir}`);
  }
}

export function vmSnapshotRows(v: VmSnapshot, where: Where): Row[] {
  const section = `snapshots, real agent and devices (${QUEUES} queue x ${DEPTH})`;
  const tcg = where === 'VM';
  const rows: Row[] = [
    { section, where, name: '1 TiB thin, empty: snapshot, attached (request, best of 2)', value: sec(v.thin.ms), figure: v.thin.ms,
      target: `< ${SNAPSHOT_TARGET_MS / 1000} s${tcg ? ' (host row)' : ''}`, ...(tcg ? {} : { met: v.thin.ms < SNAPSHOT_TARGET_MS }) },
    { section, where, name: `${thousands(v.cow.entries)} MiB thick origin: snapshot, attached (request)`, value: sec(v.cow.snapshotRequestMs) },
  ];
  for (const [mode, m] of Object.entries(v.cow.modes)) {
    for (const r of m.runs) {
      rows.push({ section, where, name: `first 4k write after a snapshot, --partial ${mode}, QD ${r.iodepth} (${r.ios})`, value: `${thousands(r.iops)} /s, mean ${r.clatMeanMs} ms`,
        figure: r.iops, target: 'alloc ok', met: r.growthOk });
      rows.push({ section, where, name: `  space: allocated / written to the container, per byte written`, value: `${r.spaceAmplification}x / ${r.physicalAmplification}x` });
    }
    rows.push({ section, where, name: `  --partial ${mode}: a second 4k write per segment, QD 1`, value: `${thousands(m.rewrite.iops)} /s, mean ${m.rewrite.clatMeanMs} ms` });
    rows.push({ section, where, name: `  --partial ${mode}: clone changed, clone ${CHAIN} still reads the old data`, value: `${m.cloneChanged ? 'yes' : 'NO'}, ${m.sharedUnchanged ? 'yes' : 'NO'}`,
      target: 'yes, yes', met: m.cloneChanged && m.sharedUnchanged });
    if (m.foldCliMs !== undefined) rows.push({ section, where, name: `  --partial ${mode}: vdisk fold of ${m.alternates} alternates (CLI wall)`, value: sec(m.foldCliMs) });
  }
  for (const c of v.cowSequential) {
    rows.push(ratioRow(section, where, `sequential ${c.bs} writes QD 16 (${c.sizeMiB} MiB), COW first write after a snapshot / steady${c.bs === '1M' ? ' (whole segments)' : ''}`,
      c.first.mbPerSec, c.steady.mbPerSec, 'MB/s', COW_SEQ_TARGET));
  }
  rows.push({ section, where, name: `clone ${CHAIN} deep reads the origin file's data`, value: v.chain.lastSameDataAsFile ? 'yes' : 'NO', target: 'yes', met: v.chain.lastSameDataAsFile });
  const r = v.chain.cloneIops / v.chain.originIops;
  rows.push({ ...ratioRow(section, where, `4k randread QD 32: clone ${CHAIN} deep / origin`, v.chain.cloneIops, v.chain.originIops, 'IOPS'), target: '~1.0', met: r >= 0.9 && r <= 1.1 });
  rows.push({ section, where, name: 'vdisk check at the end', value: v.checkOk ? 'consistent' : 'FAILED', target: 'exit 0', met: v.checkOk });
  return rows;
}
