// `vdisk stats`: the controller's metrics now (map faults by kind, containers, agents); the same figures a
// Prometheus scraper gets from `vdisk controller start --metrics HOST:PORT`.
import { Command, Option } from 'clipanion';
import type { StatsSnapshot } from '../../controller/metrics.js';
import { formatSize } from '../../util/size.js';
import { ControllerCommand, formatTable } from '../controller-command.js';

export class StatsCommand extends ControllerCommand {
  static override paths = [['stats']];
  static override usage = Command.Usage({ description: 'show the controller\'s metrics: faults, containers, agents' });

  json = Option.Boolean('--json', false, { description: 'print as JSON' });

  async run(): Promise<number> {
    const s = await this.call<StatsSnapshot>('stats');
    if (this.json) {
      this.print(JSON.stringify(s));
      return 0;
    }
    this.print(`controller up ${s.uptimeS} s, ${s.disks} disk(s)`);
    this.context.stdout.write(formatTable(['FAULTS', 'COUNT', 'ERRORS', 'MEAN MS', 'MAX MS'],
      Object.entries(s.faults).map(([k, f]) => [k, f.count, f.errors, (f.totalMs / Math.max(1, f.count)).toFixed(2), f.maxMs.toFixed(2)])));
    this.context.stdout.write(formatTable(['CONTAINER', 'SIZE', 'USED', 'STATE'],
      s.containers.map((c) => [c.name, formatSize(c.sizeBytes), formatSize(c.usedBytes), c.failed ? 'failed' : 'ok'])));
    this.context.stdout.write(formatTable(['AGENT', 'LEASE', 'CONNECTED'], s.agents.map((a) => [a.hostId, `${a.leaseMs / 1000} s`, `${a.connectedS} s`])));
    return 0;
  }
}
