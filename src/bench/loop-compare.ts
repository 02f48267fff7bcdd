// vdisk loop against the kernel loop device (and the C server ublksrv's loop target when built) over the same
// file, fio 4k randread/randwrite QD 32, alternating servers within each round so drift hits all alike. Run in
// the VM on two backing setups: a file on tmpfs and a file on ext4 on the virtio scratch disk.
import { fioRand, type RandResult, type RandRw } from './exec.js';
import { mean, ratioRow, round, type Row, type Where } from './report.js';
import { startKernelLoop, startUblksrvLoop, startVdiskLoop, ublksrvProgram, type Served } from './servers.js';

const RWS: RandRw[] = ['randread', 'randwrite'];
/** The issue's lower bounds for vdisk loop / kernel loop. */
export const LOOP_TARGETS: Record<RandRw, number> = { randread: 0.7, randwrite: 0.5 };
type Server = 'vdisk' | 'kernel' | 'ublksrv';

export interface LoopCompare {
  setup: string; file: string; queues: number; depth: number; runtime: number; rounds: number;
  direct: Partial<Record<Server, boolean | null>>;
  runs: Record<Server, Record<RandRw, RandResult[]>>;
  summary: Record<RandRw, Partial<Record<Server, number>>>;
  ublksrv: string;
}

export async function loopCompare(o: { setup: string; file: string; queues: number; depth: number; runtime: number; rounds: number; log: (m: string) => void }): Promise<LoopCompare> {
  const prog = ublksrvProgram();
  const servers: Server[] = prog ? ['vdisk', 'kernel', 'ublksrv'] : ['vdisk', 'kernel'];
  const empty = () => ({ randread: [], randwrite: [] });
  const out: LoopCompare = {
    setup: o.setup, file: o.file, queues: o.queues, depth: o.depth, runtime: o.runtime, rounds: o.rounds, direct: {},
    runs: { vdisk: empty(), kernel: empty(), ublksrv: empty() }, summary: { randread: {}, randwrite: {} },
    ublksrv: prog ? `loop target, ${o.queues} queue x ${o.depth}` : 'not built (VDISK_BENCH_UBLKSRV unset): rows skipped',
  };
  const start = (s: Server): Promise<Served> =>
    s === 'vdisk' ? startVdiskLoop(o.file, o.queues, o.depth) : s === 'kernel' ? Promise.resolve(startKernelLoop(o.file)) : startUblksrvLoop(prog!, o.file, o.queues, o.depth);
  for (let round = 0; round < o.rounds; round++) {
    for (const rw of RWS) {
      // Rotate which goes first, so drift within a round does not always favour the same server.
      const order = servers.map((_, i) => servers[(i + round) % servers.length]!);
      for (const s of order) {
        const dev = await start(s);
        out.direct[s] = dev.direct;
        try {
          out.runs[s][rw].push(fioRand(dev.dev, rw, o.runtime));
        } finally {
          await dev.stop();
        }
      }
      o.log(`${o.setup} round ${round + 1} ${rw}: ${servers.map((s) => `${s} ${out.runs[s][rw].at(-1)!.iops.toFixed(0)}`).join(', ')} IOPS`);
    }
  }
  for (const rw of RWS) for (const s of servers) out.summary[rw][s] = Math.round(mean(out.runs[s][rw].map((r) => r.iops)));
  return out;
}

export function loopRows(c: LoopCompare, where: Where): Row[] {
  const dio = (s: Server) => (c.direct[s] === undefined ? '' : c.direct[s] ? 'direct' : c.direct[s] === null ? 'dio ?' : 'buffered');
  const section = `vdisk loop vs kernel loop, ${c.setup} (fio 4k QD 32, ${c.rounds} x ${c.runtime} s; vdisk ${c.queues} queue x ${c.depth}, ` +
    `${dio('vdisk')}; kernel loop ${dio('kernel')}${c.summary.randread.ublksrv !== undefined ? `; ublksrv ${c.queues} queue x ${c.depth}` : ''})`;
  const rows: Row[] = [];
  for (const rw of RWS) {
    const s = c.summary[rw];
    rows.push(ratioRow(section, where, `${rw}: vdisk loop / kernel loop`, s.vdisk!, s.kernel!, 'IOPS', LOOP_TARGETS[rw]));
    if (s.ublksrv !== undefined) {
      rows.push(ratioRow(section, where, `${rw}: vdisk loop / ublksrv loop (C server)`, s.vdisk!, s.ublksrv, 'IOPS'));
      rows.push(ratioRow(section, where, `${rw}: ublksrv loop / kernel loop`, s.ublksrv, s.kernel!, 'IOPS'));
    }
  }
  if (c.summary.randread.ublksrv === undefined) rows.push({ section, where, name: 'ublksrv (the C server)', value: c.ublksrv });
  const p99 = (s: Server, rw: RandRw) => round(mean(c.runs[s][rw].map((r) => r.clatP99us)), 0);
  rows.push({ section, where, name: 'clat p99, randwrite: vdisk / kernel loop', value: `${p99('vdisk', 'randwrite')} / ${p99('kernel', 'randwrite')} us` });
  return rows;
}
