// `npm run bench`: the ublk-free parts natively on this host first (controller create/attach and faults,
// snapshot requests and copy-on-write faults with a stand-in agent, event-loop stalls), where times mean
// something, with the controller's TLS listener beside its Unix socket, and the controller's CPU per idle agent;
// then (unless --host-only) the ublk part (vm-main.ts) in the QEMU VM, or natively on a ublk host as root. Prints one
// table of every row (where, value, target, met) and writes the JSON to bench-results/.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { hostControllerBench, hostControllerRows } from './host-controller.js';
import { hostSnapshotBench, hostSnapshotRows } from './host-snapshot.js';
import { idleAgentsRows, idleTransportsBench } from './idle-agents.js';
import { benchArgs, parseBenchArgs } from './options.js';
import { printRows, type Report, type Row, type Where } from './report.js';
import { stallBench, type StallRow } from './stalls.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const STALL_RULE_MS = 50;

export function stallRows(r: { segments: number; rows: StallRow[] }, where: Where): Row[] {
  const section = `controller event-loop stalls, ${r.segments.toLocaleString('en-US')} mapped segments (thick, 1 MiB)`;
  return r.rows.map((s) => ({ section, where, name: s.op, value: `${s.ms} ms, longest stall ${s.maxStallMs} ms`, figure: s.maxStallMs,
    target: `~${STALL_RULE_MS} ms`, met: s.maxStallMs <= STALL_RULE_MS }));
}

export async function main(argv: string[]): Promise<number> {
  const { opts } = parseBenchArgs(argv);
  const log = (m: string) => console.error(`bench: ${m}`);
  const outDir = path.join(root, 'bench-results');
  fs.mkdirSync(outDir, { recursive: true });
  const outFile = path.join(outDir, `bench-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
  const native = fs.existsSync('/dev/ublk-control') && process.getuid?.() === 0 && !process.env.VDISK_FORCE_VM;
  const hostWhere: Where = native ? 'native' : 'host';
  const hostRows: Row[] = [];
  const host: Record<string, unknown> = {};
  const errors: string[] = [];
  const part = async <T>(name: string, fn: () => Promise<T>, rows: (r: T) => Row[]) => {
    try {
      const r = await fn();
      host[name] = r;
      hostRows.push(...rows(r));
    } catch (err) {
      errors.push(`host ${name}: ${(err as Error).message}`);
      host[name] = { error: (err as Error).message };
      log(`the host part ${name} failed: ${(err as Error).stack ?? String(err)}`);
    }
  };
  // Natively on a ublk host the VM body measures the same controller work, with devices: no host copy.
  if (!native && opts.controller) await part('controller', () => hostControllerBench({ faults: opts.hostFaults, tls: opts.tls, log }), hostControllerRows);
  if (opts.snapshot) await part('snapshot', () => hostSnapshotBench({ cows: opts.cows, thickGiB: opts.snapshotThickGiB, log }), hostSnapshotRows);
  const stallsRows: Row[] = [];
  if (opts.stalls) await part('stalls', () => stallBench({ log }), (r) => { stallsRows.push(...stallRows(r, hostWhere)); return []; });
  if (opts.idle) await part('idleAgents', () => idleTransportsBench({ agents: opts.idleAgents, seconds: opts.idleSeconds, log }), (r) => idleAgentsRows(r, hostWhere));

  if (!opts.hostOnly) {
    const inner = [process.execPath, path.join(root, 'dist', 'bench', 'vm-main.js'), outFile, ...benchArgs(opts)];
    const cmd = native ? inner : [path.join(root, 'scripts', 'vm', 'run'), '--scratch', '8G', '--smp', '2', '--timeout', '3000',
      '--out', outDir, '--', path.join(root, 'scripts', 'in-vm.sh'), ...inner];
    log(`${native ? 'natively' : 'in the VM'}: ${inner.slice(1).join(' ')}`);
    const r = spawnSync(cmd[0]!, cmd.slice(1), { stdio: ['ignore', 'inherit', 'inherit'], cwd: root });
    if (r.status !== 0) errors.push(`the ${native ? 'native' : 'VM'} part exited ${r.status ?? r.signal}`);
  }
  const report: Report = fs.existsSync(outFile) ? JSON.parse(fs.readFileSync(outFile, 'utf8')) as Report : { date: new Date().toISOString(), rows: [] };
  report.host = host;
  report.rows = [...hostRows, ...report.rows, ...stallsRows];
  if (errors.length > 0) report.hostErrors = errors;
  fs.writeFileSync(outFile, JSON.stringify(report, null, 2) + '\n');
  console.log('\n==== npm run bench: every row');
  printRows(report.rows);
  console.log(`\n(${opts.hostOnly ? 'host rows only' : native ? 'native ublk host' : 'VM rows: QEMU TCG, absolute times mean little, ratios do; host rows: natively on this machine'}; JSON: ${outFile})`);
  for (const e of errors) console.error(`bench: ${e}`);
  return errors.length > 0 ? 1 : 0;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  process.exitCode = await main(process.argv.slice(2));
}
