// `vdisk ls`: the disks the controller knows.
import { Command, Option } from 'clipanion';
import type { Disk } from '../../controller/store.js';
import { formatSize } from '../../util/size.js';
import { ControllerCommand, formatTable } from '../controller-command.js';

export class LsCommand extends ControllerCommand {
  static override paths = [['ls']];
  static override usage = Command.Usage({ description: 'list virtual disks' });

  json = Option.Boolean('--json', false, { description: 'print as JSON' });

  async run(): Promise<number> {
    const disks = await this.call<Disk[]>('disk.ls');
    if (this.json) this.print(JSON.stringify(disks));
    else this.context.stdout.write(formatTable(['NAME', 'SIZE', 'SEGMENT', 'SEGMENTS'],
      disks.map((d) => [d.name, formatSize(d.size), formatSize(d.segmentSize), d.segments])));
    return 0;
  }
}
