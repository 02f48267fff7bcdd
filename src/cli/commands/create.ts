// `vdisk create DISK --size SIZE`: a new disk, thin (all Zero, storage allocated on first write) unless --thick.
import { Command, Option, UsageError } from 'clipanion';
import { MAX_SEGMENTS, checkSegmentSize, maxDiskSize } from '../../table/mapping-table.js';
import { formatSize } from '../../util/size.js';
import { COW_HELP, PARTIAL_HELP, modesOption, nameOption, requireOption, sizeOption } from '../base.js';
import { ControllerCommand } from '../controller-command.js';

export class CreateCommand extends ControllerCommand {
  static override paths = [['create']];
  static override usage = Command.Usage({
    description: 'create a virtual disk',
    examples: [['A thin 1 TiB disk', '$0 create db1 --size 1T'], ['A thick disk on container c2', '$0 create logs --size 20G --container c2 --thick']],
  });

  name = Option.String({ required: true });
  size = Option.String('--size', { description: 'disk size (K/M/G/T), a multiple of 512 (required)' });
  segmentSize = Option.String('--segment-size', { description: 'mapping segment size, 64K..64M (default 1M)' });
  container = Option.String('--container', { description: 'allocate from this container only' });
  thick = Option.Boolean('--thick', false, { description: 'allocate all storage now instead of on first write' });
  cow = Option.String('--cow', { description: COW_HELP });
  partial = Option.String('--partial', { description: PARTIAL_HELP });

  async run(): Promise<number> {
    const modes = modesOption(this.cow, this.partial);
    nameOption('disk', this.name);
    const size = sizeOption('--size', requireOption('--size', this.size), 0);
    if (size === 0 || size % 512 !== 0) throw new UsageError(`--size must be a positive multiple of 512, not ${this.size}`);
    const segmentSize = sizeOption('--segment-size', this.segmentSize, 1 << 20);
    try {
      checkSegmentSize(segmentSize);
    } catch (err) {
      throw new UsageError(`--segment-size: ${(err as Error).message}`);
    }
    if (size > maxDiskSize(segmentSize)) {
      throw new UsageError(`--size ${formatSize(size)} is over the limit of ${formatSize(maxDiskSize(segmentSize))} for ${formatSize(segmentSize)} segments (${MAX_SEGMENTS} segments per disk): use a larger --segment-size`);
    }
    const d = await this.call<{ name: string; segments: number }>('disk.create',
      { name: this.name, size, segmentSize, container: this.container, thick: this.thick, ...modes });
    this.print(`disk ${d.name}: ${formatSize(size)}, ${d.segments} segment(s) of ${formatSize(segmentSize)}, ${this.thick ? 'thick' : 'thin'}`);
    return 0;
  }
}
