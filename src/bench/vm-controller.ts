// The controller benchmarks where ublk exists, through the real CLI, controller and agent processes: a 1 TiB
// thin disk's create and attach; first writes into fresh thin segments (4k, one per segment, QD 1 and 16; 1 MiB
// sequential against the same range once allocated) beside a dm-thin pool in the same VM; the controller's
// share of those faults (stand-in agent, 1 / 16 / 64 at a time); a thick mapped disk against `vdisk loop`.
import fs from 'node:fs';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import type { DiskInfo } from '../controller/store.js';
import { createThin } from './dm-thin.js';
import { DATA_AT, fioOnePerSegment, fioRand, fioSeqWrite, MiB, sameData, wipeLeftLabel, type FirstWrites, type RandResult, type RandRw, type SeqResult } from './exec.js';
import { attachWithoutDevice, BIG_SIZE, DEPTH, FAULT_CONCURRENCY, QUEUES, type AttachWithoutDevice } from './host-controller.js';
import { mean, ratioRow, sec, thousands, type Row, type Where } from './report.js';
import { startVdiskLoop } from './servers.js';
import { BenchSession, elapsed, type FaultRun } from './session.js';

const HOST = 'bench';
/** The sequential first-write range: 256 MiB, less for a quick run with few faults. */
const seqMiB = (faults: number) => Math.min(256, 4 * faults);
const RWS: RandRw[] = ['randread', 'randwrite'];

interface FreshRun extends FirstWrites { allocatedOk?: boolean }
export interface VmController {
  cliStartupMs: number;
  big: { createCliMs: number; createRequestMs: number; attachCliMs: number; attachRequestMs: number; attachWithoutDevice: AttachWithoutDevice };
  firstWrites: { vdisk: FreshRun[]; dmThin: FirstWrites[] };
  sequential: { sizeMiB: number; fresh: SeqResult; allocated: SeqResult; dmThinFresh: SeqResult; dmThinAllocated: SeqResult };
  controllerOnly: FaultRun[];
  mappedVsLoop: { sameDataAsFile: boolean; runs: Record<'mapped' | 'loop', Record<RandRw, RandResult[]>>; summary: Record<RandRw, { mapped: number; loop: number }> };
  dmThinError?: string;
}

/** o.file: the bench's backing file (full of random data) on the scratch file system, in o.dir. */
export async function vmControllerBench(o: { dir: string; file: string; runtime: number; rounds: number; faults: number; log: (m: string) => void }): Promise<VmController> {
  const s = new BenchSession(path.join(o.dir, 'bench-vdisk-data'));
  const attached = new Set<string>();
  let agentStarted = false;
  const attach = async (name: string) => {
    const r = await s.cliJson<{ device: string }>('attach', name, '--host-id', HOST, '--queues', String(QUEUES), '--depth', String(DEPTH));
    attached.add(name);
    return r.device;
  };
  const detach = async (name: string) => { await s.cli('detach', name); attached.delete(name); };
  await s.cli('controller', 'start');
  const pid = (await s.cliJson<{ pid: number }>('controller', 'status')).pid;
  try {
    const cliStartupMs = (await s.cliStartup()).median;

    // ---- 1. a 1 TiB thin disk: create, attach (bulk load) with and without device start
    o.log('controller: 1 TiB thin disk (1,048,576 entries): create and attach');
    await s.cli('container', 'add', 'big', '--path', path.join(o.dir, 'bench-big.img'), '--size', '2G');
    const createCliMs = (await s.cli('create', 'big1', '--size', '1T', '--segment-size', '1M', '--container', 'big')).ms;
    const createRequestMs = (await s.rpc('disk.create', { name: 'big2', size: BIG_SIZE, segmentSize: MiB, container: 'big', thick: false })).ms;
    const noDevice = await attachWithoutDevice(s, 'big1');
    await s.cli('agent', 'start', '--host-id', HOST);
    agentStarted = true;
    const t0 = performance.now();
    await attach('big1');
    const attachCliMs = elapsed(t0);
    await detach('big1');
    const attachRequestMs = (await s.rpc('disk.attach', { name: 'big2', hostId: HOST, queues: QUEUES, depth: DEPTH })).ms;
    attached.add('big2');
    await s.rpc('disk.detach', { name: 'big2', hostId: HOST, force: false });
    attached.delete('big2');
    await s.cli('rm', 'big1');
    await s.cli('rm', 'big2');

    // ---- 2. first writes into fresh thin segments, and the same on dm-thin
    const F = o.faults;
    const seqMiBs = seqMiB(F);
    const seqAt = 2 * F;
    const ctlAt = seqAt + seqMiBs;
    const size = (ctlAt + FAULT_CONCURRENCY.length * F) * MiB;
    o.log(`controller: first writes, ${F} segments at QD 1 and QD 16, then ${seqMiBs} MiB sequential`);
    // The runs below allocate every segment of the disk: the container is that and the label's reserve.
    await s.cli('container', 'add', 'thin', '--path', path.join(o.dir, 'bench-thin.img'), '--size', String(DATA_AT + size));
    await s.cli('create', 'faults', '--size', String(size), '--segment-size', '1M', '--container', 'thin');
    const dev = await attach('faults');
    const vdisk: FreshRun[] = [];
    for (const [i, qd] of [1, 16].entries()) {
      const run: FreshRun = fioOnePerSegment(dev, i * F, F, qd);
      run.allocatedOk = (await s.cliJson<DiskInfo>('info', 'faults')).allocatedBytes === (i + 1) * F * MiB && run.ios === F;
      vdisk.push(run);
      o.log(`controller: first 4k writes at QD ${qd}: ${run.iops}/s, allocation ${run.allocatedOk ? 'ok' : 'WRONG'}`);
    }
    const fresh = fioSeqWrite(dev, 'fresh', '1M', seqAt, seqMiBs);
    const allocated = fioSeqWrite(dev, 'allocated', '1M', seqAt, seqMiBs);
    o.log(`controller: 1 MiB sequential, fresh thin ${fresh.mbPerSec} MB/s, allocated ${allocated.mbPerSec} MB/s`);
    await detach('faults');
    const controllerOnly: FaultRun[] = [];
    for (const [i, c] of FAULT_CONCURRENCY.entries()) controllerOnly.push(await s.faults('faults', ctlAt + i * F, F, c));
    await s.cli('rm', 'faults');
    await s.cli('container', 'rm', 'thin');
    fs.rmSync(path.join(o.dir, 'bench-thin.img'), { force: true });

    const dmThin: FirstWrites[] = [];
    let dmSeq: { fresh: SeqResult; allocated: SeqResult } | undefined;
    let dmThinError: string | undefined;
    try {
      const thin = await createThin(o.dir, 'vdisk-bench-thin', size, size);
      try {
        for (const [i, qd] of [1, 16].entries()) dmThin.push(fioOnePerSegment(thin.dev, i * F, F, qd));
        dmSeq = { fresh: fioSeqWrite(thin.dev, 'fresh', '1M', seqAt, seqMiBs), allocated: fioSeqWrite(thin.dev, 'allocated', '1M', seqAt, seqMiBs) };
        o.log(`controller: dm-thin first 4k writes ${dmThin.map((r) => `${r.iops}/s at QD ${r.iodepth}`).join(', ')}; 1 MiB sequential fresh ${dmSeq.fresh.mbPerSec} MB/s`);
      } finally {
        await thin.remove();
      }
    } catch (err) {
      dmThinError = (err as Error).message;
      o.log(`controller: dm-thin failed: ${dmThinError}`);
    }
    const none: SeqResult = { mbPerSec: NaN, elapsedMs: NaN, ios: 0 };

    // ---- 3. a thick mapped disk against `vdisk loop` on its container file. The disk starts after the
    // label's reserve (segment i is the file's MiB i + 1); `vdisk loop` serves the file from byte 0, so fio
    // works on its range [DATA_AT, file end): the same bytes as the whole mapped disk, and the label untouched.
    o.log('controller: 4k randread/randwrite, thick mapped disk vs vdisk loop on its container file');
    const diskSize = fs.statSync(o.file).size - DATA_AT;
    await s.cli('container', 'add', 'thick', '--path', o.file);
    await s.cli('create', 'mapped', '--size', String(diskSize), '--segment-size', '1M', '--container', 'thick', '--thick');
    const mdev = await attach('mapped');
    const runs = { mapped: { randread: [], randwrite: [] }, loop: { randread: [], randwrite: [] } } as VmController['mappedVsLoop']['runs'];
    const sameDataAsFile = sameData(mdev, o.file, diskSize, DATA_AT);
    for (let round = 0; round < o.rounds; round++) {
      for (const rw of RWS) {
        for (const which of round % 2 === 0 ? ['mapped', 'loop'] as const : ['loop', 'mapped'] as const) {
          if (which === 'mapped') {
            runs.mapped[rw].push(fioRand(mdev, rw, o.runtime));
          } else {
            const l = await startVdiskLoop(o.file, QUEUES, DEPTH, s.env);
            try { runs.loop[rw].push(fioRand(l.dev, rw, o.runtime, { offset: DATA_AT, size: diskSize })); } finally { await l.stop(); }
          }
        }
        o.log(`controller: round ${round + 1} ${rw}: mapped ${runs.mapped[rw].at(-1)!.iops.toFixed(0)}, vdisk loop ${runs.loop[rw].at(-1)!.iops.toFixed(0)} IOPS`);
      }
    }
    await detach('mapped');
    await s.cli('rm', 'mapped');
    await s.cli('container', 'rm', 'thick'); // wipes the file's label: the snapshot bench (or a next run) adds it again
    const avg = (xs: RandResult[]) => Math.round(mean(xs.map((r) => r.iops)));
    const summary = {
      randread: { mapped: avg(runs.mapped.randread), loop: avg(runs.loop.randread) },
      randwrite: { mapped: avg(runs.mapped.randwrite), loop: avg(runs.loop.randwrite) },
    };
    await s.cli('check');
    const out: VmController = {
      cliStartupMs, big: { createCliMs, createRequestMs, attachCliMs, attachRequestMs, attachWithoutDevice: noDevice },
      firstWrites: { vdisk, dmThin }, sequential: { sizeMiB: seqMiBs, fresh, allocated, dmThinFresh: dmSeq?.fresh ?? none, dmThinAllocated: dmSeq?.allocated ?? none },
      controllerOnly, mappedVsLoop: { sameDataAsFile, runs, summary },
    };
    if (dmThinError) out.dmThinError = dmThinError;
    return out;
  } finally {
    for (const name of attached) await s.cli('detach', name).catch((e: Error) => o.log(`cleanup: ${e.message}`));
    if (agentStarted) await s.cli('agent', 'stop', '--host-id', HOST).catch((e: Error) => o.log(`cleanup: ${e.message}`));
    await s.stopController(pid, o.log);
    for (const f of ['bench-big.img', 'bench-thin.img']) fs.rmSync(path.join(o.dir, f), { force: true });
    // After a failure the bench file may still hold thick's label: the snapshot bench must be able to add it.
    try { if (wipeLeftLabel(o.file)) o.log(`cleanup: wiped the label left on ${o.file}`); } catch (e) { o.log(`cleanup: ${(e as Error).message}`); }
  }
}

export function vmControllerRows(c: VmController, where: Where): Row[] {
  const section = `controller, real agent and devices (${QUEUES} queue x ${DEPTH})`;
  const b = c.big;
  const rows: Row[] = [
    { section, where, name: '1 TiB thin create, request on the socket', value: sec(b.createRequestMs) },
    { section, where, name: '1 TiB attach, CLI wall (node + device start included)', value: sec(b.attachCliMs) },
    { section, where, name: '1 TiB attach, request (device start included)', value: sec(b.attachRequestMs) },
    { section, where, name: '1 TiB attach, request without device start', value: sec(b.attachWithoutDevice.ms) },
  ];
  for (const [i, v] of c.firstWrites.vdisk.entries()) {
    rows.push({ section, where, name: `first 4k writes, one per fresh 1 MiB segment, QD ${v.iodepth} (${v.ios}): vdisk thin`, value: `${thousands(v.iops)} /s, mean ${v.clatMeanMs} ms`,
      figure: v.iops, target: 'alloc ok', met: v.allocatedOk === true });
    const d = c.firstWrites.dmThin[i];
    if (d) rows.push(ratioRow(section, where, `  vdisk thin / dm-thin (1 MiB blocks), QD ${v.iodepth}`, v.iops, d.iops, 'IOPS'));
  }
  const q = c.sequential;
  rows.push(ratioRow(section, where, `1 MiB sequential writes QD 16 (${q.sizeMiB} MiB): fresh thin / allocated, same run`, q.fresh.mbPerSec, q.allocated.mbPerSec, 'MB/s', 0.8));
  if (!Number.isNaN(q.dmThinFresh.mbPerSec)) {
    rows.push(ratioRow(section, where, '  first writes: vdisk fresh thin / dm-thin fresh', q.fresh.mbPerSec, q.dmThinFresh.mbPerSec, 'MB/s'));
    rows.push(ratioRow(section, where, '  dm-thin: fresh / allocated', q.dmThinFresh.mbPerSec, q.dmThinAllocated.mbPerSec, 'MB/s'));
  }
  if (c.dmThinError) rows.push({ section, where, name: 'dm-thin', value: `failed: ${c.dmThinError}`.slice(0, 80) });
  for (const f of c.controllerOnly) {
    rows.push({ section, where, name: `controller-side allocating faults, ${f.concurrency} at a time (${f.faults})`, value: `${thousands(f.faultsPerSec)} /s`, figure: f.faultsPerSec });
  }
  const m = c.mappedVsLoop;
  for (const rw of RWS) rows.push(ratioRow(section, where, `4k ${rw} QD 32, thick mapped disk / vdisk loop, same file`, m.summary[rw].mapped, m.summary[rw].loop, 'IOPS', 0.95));
  rows.push({ section, where, name: '  the mapped disk reads the file\'s data', value: m.sameDataAsFile ? 'yes' : 'NO', target: 'yes', met: m.sameDataAsFile });
  return rows;
}
