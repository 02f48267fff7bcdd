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
    const names = new Map(disks.map((d) => [d.id, d.name]));
    if (!this.json) this.context.stdout.write(formatTable(['NAME', 'SIZE', 'SEGMENT', 'SEGMENTS', 'TYPE', 'PARENT'],
      disks.map((d) => [d.name, formatSize(d.size), formatSize(d.segmentSize), d.segments, d.readOnly ? 'snapshot' : d.parent !== null ? 'clone' : 'disk',
        d.parent === null ? '-' : names.get(d.parent) ?? '-'])));
    return 0;
  }
}
