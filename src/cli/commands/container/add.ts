// `vdisk container add NAME --path FILE_OR_BLOCKDEV [--size SIZE] [--host-path HOST=PATH ...]`: registers
// storage with the controller, creating a sparse file of SIZE when FILE does not exist yet; the controller
// writes the container's label on it. --host-path: the path a host reaches it by, where it differs.
import { Command, Option } from 'clipanion';
import { formatSize } from '../../../util/size.js';
import { hostPathsOption, nameOption, requireOption, sizeOption } from '../../base.js';
import { ControllerCommand } from '../../controller-command.js';

export class ContainerAddCommand extends ControllerCommand {
  static override paths = [['container', 'add']];
  static override usage = Command.Usage({
    description: 'add a storage container (a file, created sparse if missing, or a block device)',
    examples: [
      ['A 100 GiB sparse file', '$0 container add c1 --path /srv/vdisk/c1.img --size 100G'],
      ['A shared LUN that host h2 sees under another name', '$0 container add lun1 --path /dev/sdb --host-path h2=/dev/sdc'],
    ],
  });

  name = Option.String({ required: true });
  file = Option.String('--path', { description: 'file or block device (required)' });
  size = Option.String('--size', { description: 'size (K/M/G/T); required when the file does not exist' });
  hostPaths = Option.Array('--host-path', { description: 'HOST=PATH: the path host HOST reaches it by (repeatable)' });

  async run(): Promise<number> {
    const file = requireOption('--path', this.file);
    nameOption('container', this.name);
    const size = this.size === undefined ? undefined : sizeOption('--size', this.size, 0);
    const hostPaths = hostPathsOption(this.hostPaths, false);
    const c = await this.call<{ name: string; path: string; size: number }>('container.add', { name: this.name, path: file, size, hostPaths });
    this.print(`container ${c.name}: ${c.path}, ${formatSize(c.size)}`);
    return 0;
  }
}
