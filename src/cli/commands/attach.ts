// `vdisk attach DISK`: serve the disk on this host (or --host-id's) as /dev/ublkbN and print the path.
// Starts the host's agent when none is connected.
import { Command, Option } from 'clipanion';
import type { VdiskError } from '../../errors.js';
import { startAgent } from '../agent-starter.js';
import { hostIdOption, intOption } from '../base.js';
import { ControllerCommand } from '../controller-command.js';

interface Attached { device: string; devId: number; hostId: string; queues: number }

export class AttachCommand extends ControllerCommand {
  static override paths = [['attach']];
  static override usage = Command.Usage({
    description: 'attach a disk: serve it as /dev/ublkbN on a host',
    examples: [['Attach db1 here', '$0 attach db1'], ['Attach on host b with 2 queues', '$0 attach db1 --host-id b --queues 2']],
  });

  name = Option.String({ required: true });
  hostId = Option.String('--host-id', { description: 'the host whose agent serves it (default: this host name)' });
  queues = Option.String('--queues', { description: 'hardware queues, 1..16 (default 1; capped at the CPU count)' });
  depth = Option.String('--depth', { description: 'queue depth, 1..4096 (default 128)' });
  json = Option.Boolean('--json', false, { description: 'print as JSON' });

  async run(): Promise<number> {
    const hostId = hostIdOption(this.hostId);
    const args = { name: this.name, hostId, queues: intOption('--queues', this.queues, 1, 1, 16), depth: intOption('--depth', this.depth, 128, 1, 4096) };
    let r: Attached;
    try {
      r = await this.call<Attached>('disk.attach', args);
    } catch (err) {
      if ((err as VdiskError).code !== 'ENOAGENT') throw err;
      await startAgent(this, hostId);
      try {
        r = await this.call<Attached>('disk.attach', args);
      } catch (err2) {
        // The agent was started for this attach alone: a failed attach does not leave it running.
        await this.call('agent.stop', { hostId }).catch(() => {});
        throw err2;
      }
    }
    this.print(this.json ? JSON.stringify(r) : r.device);
    return 0;
  }
}
