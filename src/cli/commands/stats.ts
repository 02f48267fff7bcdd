// `vdisk stats`: the controller's metrics now (map faults by kind, containers, agents, and per disk its
// allocation, Error segments and each serving host's I/O counts); the same figures a Prometheus scraper gets
// from `vdisk controller start --metrics HOST:PORT`. --watch repeats it, like iostat's interval and count.
import { setTimeout } from 'node:timers/promises';
import { Command, Option } from 'clipanion';
import type { StatsSnapshot } from '../../controller/metrics.js';
import { formatSize } from '../../util/size.js';
import { intOption } from '../base.js';
import { ControllerCommand, formatTable } from '../controller-command.js';

export class StatsCommand extends ControllerCommand {
  static override paths = [['stats']];
  static override usage = Command.Usage({
    description: 'show the controller\'s metrics: faults, containers, agents, disks and their I/O',
    details: 'With --watch, a new report every --interval seconds (one JSON object per line with --json) until interrupted or --count reports.',
    examples: [['Once', '$0 stats'], ['Every 5 s, 12 times, as JSON lines', '$0 stats --watch --interval 5 --count 12 --json']],
  });

  json = Option.Boolean('--json', false, { description: 'print as JSON' });
  watch = Option.Boolean('--watch', false, { description: 'repeat until interrupted' });
  interval = Option.String('--interval', { description: 'seconds between reports with --watch (default 2)' });
  count = Option.String('--count', { description: 'stop after this many reports with --watch' });

  async run(): Promise<number> {
    const interval = intOption('--interval', this.interval, 2, 1, 86_400);
    const count = this.watch ? intOption('--count', this.count, Number.MAX_SAFE_INTEGER, 1, Number.MAX_SAFE_INTEGER) : 1;
    // Ctrl-C ends a watch between reports, at once, with exit 0.
    const stop = new AbortController();
    const onSignal = () => stop.abort();
    process.once('SIGINT', onSignal);
    try {
      for (let n = 0; n < count && !stop.signal.aborted; n++) {
        if (n > 0) await setTimeout(interval * 1000, undefined, { signal: stop.signal }).catch(() => {});
        if (stop.signal.aborted) break;
        const s = await this.call<StatsSnapshot>('stats');
        if (this.json) this.print(JSON.stringify(s));
        else this.context.stdout.write(`${this.watch ? `${n > 0 ? '\n' : ''}-- ${new Date().toISOString()}\n` : ''}${report(s)}`);
      }
    } finally {
      process.off('SIGINT', onSignal);
    }
    return 0;
  }
}

function report(s: StatsSnapshot): string {
  const io = (n: number | undefined) => n ?? '-';
  const bytes = (n: number | undefined) => (n === undefined ? '-' : formatSize(n));
  return `controller up ${s.uptimeS} s, ${s.disks} disk(s)\n`
    + formatTable(['FAULTS', 'COUNT', 'ERRORS', 'MEAN MS', 'MAX MS'],
      Object.entries(s.faults).map(([k, f]) => [k, f.count, f.errors, (f.totalMs / Math.max(1, f.count)).toFixed(2), f.maxMs.toFixed(2)]))
    + formatTable(['CONTAINER', 'SIZE', 'USED', 'STATE'],
      s.containers.map((c) => [c.name, formatSize(c.sizeBytes), formatSize(c.usedBytes), c.failed ? 'failed' : 'ok']))
    + formatTable(['AGENT', 'LEASE', 'CONNECTED', 'STATE'], s.agents.map((a) => [a.hostId, `${a.leaseMs / 1000} s`, `${a.connectedS} s`,
      a.unanswered !== undefined ? `not answering (${a.unanswered})` : a.suspended ? 'suspended' : 'serving']))
    + formatTable(['DISK', 'SIZE', 'ALLOCATED', 'ERROR SEGS', 'HOST', 'DEVICE', 'READS', 'READ', 'WRITES', 'WRITTEN', 'FLUSHES', 'IO ERRORS', 'DELAYED'],
      s.diskStats.flatMap((d) => (d.hosts.length ? d.hosts : [undefined]).map((h) => [
        d.name, formatSize(d.sizeBytes), formatSize(d.allocatedBytes), d.errorSegments, h?.hostId ?? '-', h?.device ?? '-',
        io(h?.io?.reads), bytes(h?.io?.readBytes), io(h?.io?.writes), bytes(h?.io?.writeBytes), io(h?.io?.flushes), io(h?.io?.errors),
        io(h?.delays?.parked),
      ])));
}
