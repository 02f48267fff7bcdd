// 4k random reads of one disk served on two hosts (issue 13): h1 reaches the container as a local file, h2 only
// over NBD (qemu-nbd in ctl, the kernel's NBD client in h2), each host's agent connected to the controller's TLS
// listener from its own network namespace. Beside them the NBD device itself, read raw in h2: what the network
// path costs, and what vdisk adds on top of it.
import fs from 'node:fs';
import path from 'node:path';
import { VdiskError } from '../errors.js';
import { DATA_AT, fioRand, MiB, sh, type RandResult } from './exec.js';
import { DEPTH, QUEUES } from './host-controller.js';
import { topology, type NsProcess, type Topology } from './netns.js';
import { mean, ratioRow, round, type Row, type Where } from './report.js';
import { BenchSession, CLI_MAIN } from './session.js';

const PORT = 9430;
type Path = 'h1' | 'h2' | 'nbd';
const PATHS: Path[] = ['h1', 'h2', 'nbd'];

export interface VmHosts {
  sizeMiB: number; runtime: number; rounds: number; nbdDevice: string;
  runs: Record<Path, RandResult[]>;
  /** Mean IOPS per path. */
  summary: Record<Path, number>;
}

/** The agent of host h in h's namespace, over TLS with h's credential; resolves once the controller lists it. */
async function startAgent(s: BenchSession, topo: Topology, h: 'h1' | 'h2', listen: string, cred: string): Promise<NsProcess> {
  const p = topo.spawn(h, process.execPath, [CLI_MAIN, 'agent', 'start', '--controller', listen, '--credential', cred,
    '--data-dir', path.join(s.dataDir, `agent-${h}`), '--foreground']);
  for (let i = 0; i < 1200; i++) {
    if (p.finished()) throw new VdiskError(`${h}'s agent exited: ${p.stderr()}`, { code: 'EIO' });
    if ((await s.cliJson<Array<{ hostId: string }>>('agent', 'ls')).some((a) => a.hostId === h)) return p;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new VdiskError(`${h}'s agent did not connect over TLS in 120 s: ${p.stderr()}`, { code: 'ETIMEDOUT' });
}

/** o.dir: the scratch file system; the container is a new file of `sizeMiB` (+ the label's reserve) there. */
export async function vmHostsBench(o: { dir: string; sizeMiB: number; runtime: number; rounds: number; log: (m: string) => void }): Promise<VmHosts> {
  const s = new BenchSession(path.join(o.dir, 'bench-hosts-data'));
  fs.mkdirSync(s.dataDir, { recursive: true });
  const file = path.join(o.dir, 'bench-hosts.img');
  const sizeMiB = Math.min(o.sizeMiB, 512);
  const topo = topology();
  const listen = `${topo.addr.ctl}:${PORT}`;
  let controllerPid: number | undefined;
  try {
    // The controller in ctl, its TLS listener on ctl's veth address; the CLI reaches it on its Unix socket.
    topo.exec('ctl', process.execPath, CLI_MAIN, 'controller', 'start', '--data-dir', s.dataDir, '--listen', listen);
    controllerPid = (await s.cliJson<{ pid: number }>('controller', 'status')).pid;
    const cred = (h: string) => path.join(s.dataDir, `${h}.cred`);
    for (const h of ['h1', 'h2']) await s.cli('host', 'add', h, '--out', cred(h));

    fs.writeFileSync(file, '');
    fs.truncateSync(file, DATA_AT + sizeMiB * MiB);
    const nbd = topo.connectNbd('h2', topo.exportNbd(file, { cache: 'none' }));
    await s.cli('container', 'add', 'c1', '--path', file, '--host-path', `h2=${nbd}`);
    await s.cli('create', 'd', '--size', `${sizeMiB}M`, '--container', 'c1', '--thick');
    await startAgent(s, topo, 'h1', listen, cred('h1'));
    await startAgent(s, topo, 'h2', listen, cred('h2'));
    const attach = async (h: string) => (await s.cliJson<{ device: string }>('attach', 'd', '--host-id', h, '--queues', String(QUEUES), '--depth', String(DEPTH))).device;
    const dev: Record<Path, string> = { h1: await attach('h1'), h2: await attach('h2'), nbd };
    o.log(`hosts: disk d (${sizeMiB} MiB, thick) on ${dev.h1} in h1 (local file) and ${dev.h2} in h2 (over ${nbd})`);
    // Real data to read, written through h1 (so it crosses vdisk, and the reads below are not of holes).
    sh('fio', ['--name=fill', `--filename=${dev.h1}`, '--rw=write', '--bs=1M', '--iodepth=16', '--ioengine=libaio', '--direct=1',
      `--size=${sizeMiB}M`, '--buffer_compress_percentage=0', '--refill_buffers']);

    const runs: Record<Path, RandResult[]> = { h1: [], h2: [], nbd: [] };
    for (let round = 0; round < o.rounds; round++) {
      // Rotated, so that drift within a round does not favour one path. The raw NBD device is read over the
      // disk's bytes only (past the label's reserve), the same range the devices cover.
      const order = PATHS.map((_, i) => PATHS[(i + round) % PATHS.length]!);
      for (const p of order) {
        runs[p].push(p === 'nbd' ? fioRand(dev.nbd, 'randread', o.runtime, { offset: DATA_AT, size: sizeMiB * MiB }) : fioRand(dev[p], 'randread', o.runtime));
      }
      o.log(`hosts round ${round + 1} randread: ${PATHS.map((p) => `${p} ${runs[p].at(-1)!.iops.toFixed(0)}`).join(', ')} IOPS`);
    }
    const summary = Object.fromEntries(PATHS.map((p) => [p, Math.round(mean(runs[p].map((r) => r.iops)))])) as Record<Path, number>;
    for (const h of ['h1', 'h2']) await s.cli('detach', 'd', '--host-id', h);
    for (const h of ['h1', 'h2']) await s.cli('agent', 'stop', '--host-id', h);
    return { sizeMiB, runtime: o.runtime, rounds: o.rounds, nbdDevice: nbd, runs, summary };
  } finally {
    // The agents are the topology's processes (teardown ends any left after a failure); the controller is a
    // daemon of its own.
    if (controllerPid !== undefined) await s.stopController(controllerPid, o.log);
    topo.teardown();
    fs.rmSync(file, { force: true });
    fs.rmSync(s.dataDir, { recursive: true, force: true });
  }
}

export function vmHostsRows(r: VmHosts, where: Where): Row[] {
  const section = `one disk on two hosts over TLS, h2 through NBD (fio 4k randread QD 32, ${r.rounds} x ${r.runtime} s, ` +
    `${r.sizeMiB} MiB thick; vdisk ${QUEUES} queue x ${DEPTH}; qemu-nbd cache=none in ctl)`;
  const p99 = (p: Path) => round(mean(r.runs[p].map((x) => x.clatP99us)), 0);
  return [
    ratioRow(section, where, 'randread: h2 through NBD / h1 local file', r.summary.h2, r.summary.h1, 'IOPS'),
    ratioRow(section, where, 'randread: vdisk on h2 / its NBD device read raw in h2', r.summary.h2, r.summary.nbd, 'IOPS'),
    { section, where, name: 'clat p99, randread: h1 / h2 / raw NBD', value: `${p99('h1')} / ${p99('h2')} / ${p99('nbd')} us` },
  ];
}
