// The options of `npm run bench`, shared by the host entry (main.ts) and the VM body (vm-main.ts), which
// receives them unchanged. A bad value is a usage mistake: one line and exit 1.
import { parseArgs } from 'node:util';
import { VdiskError } from '../errors.js';

export interface BenchOptions {
  runtime: number; rounds: number; faults: number;
  /** Faults per row of the host's controller part: more than the VM's, so a row is more than its warm-up. */
  hostFaults: number; cows: number; fileMiB: number; snapshotThickGiB: number | undefined;
  loop: boolean; controller: boolean; snapshot: boolean; stalls: boolean;
  /** VM only: one disk on two hosts, h2 through NBD. */
  hosts: boolean;
  /** Host only: the TLS rows beside the Unix socket's, the idle-agents part (N agents, S s windows), no VM part. */
  tls: boolean; idle: boolean; idleAgents: number; idleSeconds: number; hostOnly: boolean;
}

export const USAGE = 'usage: npm run bench -- [--runtime S] [--rounds N] [--faults N] [--cows N] [--snapshot-thick GiB] ' +
  '[--file-mib N] [--idle-agents N] [--idle-seconds S] [--no-loop] [--no-controller] [--no-snapshot] [--no-hosts] [--no-stalls] [--no-tls] [--no-idle] [--host-only]';

export function parseBenchArgs(argv: string[]): { opts: BenchOptions; positionals: string[] } {
  const { values, positionals } = parseArgs({
    args: argv, allowPositionals: true, strict: true,
    options: {
      runtime: { type: 'string' }, rounds: { type: 'string' }, faults: { type: 'string' }, cows: { type: 'string' },
      'snapshot-thick': { type: 'string' }, 'file-mib': { type: 'string' }, 'no-loop': { type: 'boolean' }, 'no-controller': { type: 'boolean' },
      'no-snapshot': { type: 'boolean' }, 'no-hosts': { type: 'boolean' }, 'no-stalls': { type: 'boolean' },
      'idle-agents': { type: 'string' }, 'idle-seconds': { type: 'string' }, 'no-tls': { type: 'boolean' }, 'no-idle': { type: 'boolean' },
      'host-only': { type: 'boolean' },
    },
  });
  const num = (name: string, v: string | undefined, def: number): number => {
    if (v === undefined) return def;
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1) throw new VdiskError(`--${name} must be a positive integer, not ${v}\n${USAGE}`, { code: 'EINVAL' });
    return n;
  };
  const runtime = num('runtime', values.runtime, 20);
  // Map faults to take per run: 256, fewer for a quick check with a short --runtime.
  const faults = num('faults', values.faults, Math.min(256, Math.max(32, runtime * 16)));
  // At 64 in flight, 256 faults are four round trips: the host's rows take 2,048 unless --faults says.
  const hostFaults = values.faults === undefined ? Math.min(2048, Math.max(256, runtime * 128)) : faults;
  return {
    positionals,
    opts: {
      runtime, rounds: num('rounds', values.rounds, 2), faults, hostFaults, cows: num('cows', values.cows, faults), fileMiB: num('file-mib', values['file-mib'], 1024),
      snapshotThickGiB: values['snapshot-thick'] === undefined ? undefined : num('snapshot-thick', values['snapshot-thick'], 1024),
      loop: !values['no-loop'], controller: !values['no-controller'], snapshot: !values['no-snapshot'], hosts: !values['no-hosts'], stalls: !values['no-stalls'],
      tls: !values['no-tls'], idle: !values['no-idle'], idleAgents: num('idle-agents', values['idle-agents'], 100),
      idleSeconds: num('idle-seconds', values['idle-seconds'], Math.min(20, runtime)), hostOnly: values['host-only'] ?? false,
    },
  };
}

/** The same options as arguments again, for the VM body. */
export function benchArgs(o: BenchOptions): string[] {
  const a = ['--runtime', String(o.runtime), '--rounds', String(o.rounds), '--faults', String(o.faults), '--cows', String(o.cows), '--file-mib', String(o.fileMiB)];
  if (!o.loop) a.push('--no-loop');
  if (!o.controller) a.push('--no-controller');
  if (!o.snapshot) a.push('--no-snapshot');
  if (!o.hosts) a.push('--no-hosts');
  return a;
}
