// `vdisk loop FILE`: serve FILE as /dev/ublkbN with no controller until SIGINT/SIGTERM, then stop and
// delete the device. The first user of the whole data path and the benchmark baseline.
import os from 'node:os';
import { Command, Option, UsageError } from 'clipanion';
import { checkSegmentSize } from '../../table/mapping-table.js';
import { formatSize } from '../../util/size.js';
import { VdiskCommand, intOption, sizeOption } from '../base.js';

export class LoopCommand extends VdiskCommand {
  static override paths = [['loop']];
  static override usage = Command.Usage({
    description: 'serve a file or block device as a ublk block device, without a controller',
    details: 'Maps every segment of FILE in order and serves it as /dev/ublkbN until SIGINT or SIGTERM, then stops and deletes the device. Prints the device path once it is live.',
    examples: [
      ['Serve disk.img with 2 queues', '$0 loop disk.img --queues 2'],
      ['Serve so that a crash of this process is recoverable', '$0 loop disk.img --recoverable'],
      ['After such a crash, take over /dev/ublkb0 again', '$0 loop disk.img --recover 0'],
    ],
  });

  file = Option.String({ required: true });
  queues = Option.String('--queues', { description: 'hardware queues (default: min(cores, 4))' });
  depth = Option.String('--depth', { description: 'queue depth (default: 128)' });
  segmentSize = Option.String('--segment-size', { description: 'mapping segment size, 64K..64M (default: 1M)' });
  buffered = Option.Boolean('--buffered', false, { description: 'use the page cache instead of O_DIRECT' });
  recoverable = Option.Boolean('--recoverable', false, { description: 'survive a crash of this process: the device waits, quiesced, for --recover' });
  recover = Option.String('--recover', { description: 'take over the quiesced device with this id (after a crash of a --recoverable server)' });
  json = Option.Boolean('--json', false, { description: 'print the device as JSON' });

  async run(): Promise<number> {
    const queues = intOption('--queues', this.queues, Math.min(os.availableParallelism(), 4), 1, 64);
    const depth = intOption('--depth', this.depth, 128, 1, 4096);
    const recover = this.recover === undefined ? undefined : intOption('--recover', this.recover, 0, 0, 0x7fffffff);
    const segmentSize = sizeOption('--segment-size', this.segmentSize, 1 << 20);
    try {
      checkSegmentSize(segmentSize);
    } catch (err) {
      throw new UsageError(`--segment-size: ${(err as Error).message}`);
    }

    let signalled: NodeJS.Signals | undefined;
    let wake: () => void = () => {};
    const onSignal = (sig: NodeJS.Signals) => {
      // A second signal means the orderly stop itself is stuck: leave now, the kernel cleans up the rest.
      if (signalled !== undefined) process.exit(128 + (sig === 'SIGINT' ? 2 : 15));
      signalled = sig;
      wake();
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
    try {
      {
        // Loaded here, not at the top: every other command would pay for the device, piscina and the addon.
        const { startLoop } = await import('../../loop/loop-disk.js');
        const disk = await startLoop({
          file: this.file, queues, depth, segmentSize, buffered: this.buffered, recoverable: this.recoverable, recover,
        });
        const d = disk.device;
        if (this.json) {
          this.context.stdout.write(JSON.stringify({
            device: d.path, devId: d.devId, file: this.file, size: disk.container.size, queues: d.queues, depth: d.info.queueDepth,
            segmentSize, direct: disk.container.direct, pid: process.pid,
          }) + '\n');
        } else {
          this.context.stdout.write(`${d.path}\n`);
          this.context.stderr.write(`vdisk: serving ${this.file} (${formatSize(disk.container.size)}, ${d.queues} queue(s) x ${d.info.queueDepth}, ` +
            `${disk.container.direct ? 'O_DIRECT' : 'buffered'}) as ${d.path}; SIGINT or SIGTERM stops it\n`);
        }
        if (d.queues < queues) this.context.stderr.write(`vdisk: the kernel granted ${d.queues} of ${queues} queues (one per CPU at most)\n`);
        if (signalled === undefined) await new Promise<void>((resolve) => { wake = resolve; });
        await disk.stop();
      }
    } finally {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    }
    return 0;
  }
}
