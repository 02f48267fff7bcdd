// `vdisk ls`: the disks the controller knows, and the stable device name of those attached.
import { Command, Option } from 'clipanion';
import type { Disk } from '../../controller/store.js';
import { stableName } from '../../agent/stable-name.js';
import { formatSize } from '../../util/size.js';
import { ControllerCommand, formatTable } from '../controller-command.js';

export class LsCommand extends ControllerCommand {
  static override paths = [['ls']];
  static override usage = Command.Usage({ description: 'list virtual disks' });

  json = Option.Boolean('--json', false, { description: 'print as JSON' });

  async run(): Promise<number> {
    const disks = await this.call<Disk[]>('disk.ls');
    // An attached disk is also /dev/vdisk/NAME on each host serving it (kept by that host's agent).
    const atts = await this.call<Array<{ disk: string; hostId: string; devId: number | null }>>('attachment.ls');
    const device = (name: string) => (atts.some((a) => a.disk === name && a.devId !== null) ? stableName(name) : null);
    if (this.json) this.print(JSON.stringify(disks.map((d) => ({ ...d, device: device(d.name) }))));
    const names = new Map(disks.map((d) => [d.id, d.name]));
    if (!this.json) this.context.stdout.write(formatTable(['NAME', 'SIZE', 'SEGMENT', 'SEGMENTS', 'TYPE', 'PARENT', 'DEVICE'],
      disks.map((d) => [d.name, formatSize(d.size), formatSize(d.segmentSize), d.segments, d.readOnly ? 'snapshot' : d.parent !== null ? 'clone' : 'disk',
        d.parent === null ? '-' : names.get(d.parent) ?? '-', device(d.name) ?? '-'])));
    return 0;
  }
}
