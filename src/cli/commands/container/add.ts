// `vdisk container add NAME --path FILE_OR_BLOCKDEV [--size SIZE]`: registers storage with the controller,
// creating a sparse file of SIZE when FILE does not exist yet.
import { Command, Option } from 'clipanion';
import { formatSize } from '../../../util/size.js';
import { nameOption, requireOption, sizeOption } from '../../base.js';
import { ControllerCommand } from '../../controller-command.js';

export class ContainerAddCommand extends ControllerCommand {
  static override paths = [['container', 'add']];
  static override usage = Command.Usage({
    description: 'add a storage container (a file, created sparse if missing, or a block device)',
    examples: [['A 100 GiB sparse file', '$0 container add c1 --path /srv/vdisk/c1.img --size 100G']],
  });

  name = Option.String({ required: true });
  file = Option.String('--path', { description: 'file or block device (required)' });
  size = Option.String('--size', { description: 'size (K/M/G/T); required when the file does not exist' });

  async run(): Promise<number> {
    const file = requireOption('--path', this.file);
    nameOption('container', this.name);
    const size = this.size === undefined ? undefined : sizeOption('--size', this.size, 0);
    const c = await this.call<{ name: string; path: string; size: number }>('container.add', { name: this.name, path: file, size });
    this.print(`container ${c.name}: ${c.path}, ${formatSize(c.size)}`);
    return 0;
  }
}
