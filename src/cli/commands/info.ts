// `vdisk info DISK`: size, segment size, entries by state, allocated bytes in all and per container.
import { Command, Option } from 'clipanion';
import type { DiskInfo } from '../../controller/store.js';
import { formatSize } from '../../util/size.js';
import { ControllerCommand } from '../controller-command.js';

export class InfoCommand extends ControllerCommand {
  static override paths = [['info']];
  static override usage = Command.Usage({ description: 'show a disk: states of its entries and the storage it uses' });

  name = Option.String({ required: true });
  json = Option.Boolean('--json', false, { description: 'print as JSON' });

  async run(): Promise<number> {
    const d = await this.call<DiskInfo & { containerErrors?: Array<{ container: string; hostId: string; problem: string }> }>('disk.info', { name: this.name });
    if (this.json) {
      this.print(JSON.stringify(d));
      return 0;
    }
    const states = Object.entries(d.entriesByState).filter(([, n]) => n > 0).map(([s, n]) => `${s} ${n}`).join(', ');
    const per = Object.entries(d.perContainer).map(([c, b]) => `${c} ${formatSize(b)}`).join(', ');
    this.print([
      `disk ${d.name}`,
      `  size          ${formatSize(d.size)} (${d.size} bytes)`,
      `  segment size  ${formatSize(d.segmentSize)}, ${d.segments} segment(s)`,
      `  entries       ${states}`,
      `  allocated     ${formatSize(d.allocatedBytes)}${per ? ` (${per})` : ''}`,
      `  exclusive     ${formatSize(d.exclusiveBytes)}, shared ${formatSize(d.sharedBytes)}`,
      `  copy-on-write ${d.cow}, partial writes ${d.partial}${d.alternates ? `; ${d.alternates} segment(s) with alternate blocks (vdisk fold ${d.name})` : ''}`,
      `  free          ${formatSize(d.freeBytes)}${d.freeBytes === 0 ? ' (out of space: writes to unallocated segments fail with ENOSPC)' : ''}`,
      // A container in Error on a host: that host's I/O to its segments fails with EIO (container-labels.ts).
      ...(d.containerErrors ?? []).map((e) => `  ERROR         container ${e.container} on host ${e.hostId}: ${e.problem}`),
    ].join('\n'));
    return 0;
  }
}
