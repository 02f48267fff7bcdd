// `vdisk agent stop`: asks a host's agent to exit. Its devices stay (quiesced: I/O waits, nothing fails)
// until an agent for that host id starts again and recovers them; detach first to remove them.
import { Command, Option } from 'clipanion';
import { hostIdOption } from '../../base.js';
import { ControllerCommand } from '../../controller-command.js';

export class AgentStopCommand extends ControllerCommand {
  static override paths = [['agent', 'stop']];
  static override usage = Command.Usage({ description: 'stop a host\'s agent (its devices wait for the next agent)' });

  hostId = Option.String('--host-id', { description: 'the agent\'s host id (default: the host name)' });

  async run(): Promise<number> {
    const hostId = hostIdOption(this.hostId);
    const r = await this.call<{ pid: number }>('agent.stop', { hostId });
    this.print(`vdisk agent ${hostId} (pid ${r.pid}) stopping`);
    return 0;
  }
}
