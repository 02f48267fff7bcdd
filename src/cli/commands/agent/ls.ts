// `vdisk agent ls`: the agents connected to the controller and the disks attached to each.
import { Command, Option } from 'clipanion';
import { ControllerCommand, formatTable } from '../../controller-command.js';

interface AgentRow { hostId: string; pid: number; leaseMs: number; since: string; disks: string[] }

export class AgentLsCommand extends ControllerCommand {
  static override paths = [['agent', 'ls']];
  static override usage = Command.Usage({ description: 'list connected agents' });

  json = Option.Boolean('--json', false, { description: 'print as JSON' });

  async run(): Promise<number> {
    const list = await this.call<AgentRow[]>('agent.ls');
    if (this.json) this.print(JSON.stringify(list));
    else this.context.stdout.write(formatTable(['HOST', 'PID', 'LEASE', 'SINCE', 'DISKS'],
      list.map((a) => [a.hostId, a.pid, `${a.leaseMs / 1000}s`, a.since, a.disks.join(',') || '-'])));
    return 0;
  }
}
