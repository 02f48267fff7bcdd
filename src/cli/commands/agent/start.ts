// `vdisk agent start`: the agent of this host, in the background (or in this process with --foreground).
// It connects to the controller, which then gives it (or makes it recover) the disks attached to its host id.
import { Command, Option, UsageError } from 'clipanion';
import { VdiskError } from '../../../errors.js';
import { agentLogPath, socketPath } from '../../../controller/paths.js';
import { hostIdOption } from '../../base.js';
import { ControllerCommand } from '../../controller-command.js';
import { startAgent } from '../../agent-starter.js';

export class AgentStartCommand extends ControllerCommand {
  static override paths = [['agent', 'start']];
  static override usage = Command.Usage({
    description: 'start the agent that serves this host\'s disks',
    details: 'Attach starts one on demand. Devices survive the agent: a new agent for the same host id takes them over.',
  });

  hostId = Option.String('--host-id', { description: 'this host\'s id (default: the host name)' });
  lease = Option.String('--lease', { description: 'seconds without the controller before I/O is suspended (default 10)' });
  foreground = Option.Boolean('--foreground', false, { description: 'run in this process instead of in the background' });

  async run(): Promise<number> {
    const hostId = hostIdOption(this.hostId);
    const leaseS = this.lease === undefined ? 10 : Number(this.lease);
    if (!Number.isFinite(leaseS) || leaseS < 0.5 || leaseS > 3600) throw new UsageError(`--lease must be a number of seconds from 0.5 to 3600, not "${this.lease}"`);
    const leaseMs = Math.round(leaseS * 1000);
    if (this.foreground) {
      // Loaded here, not at the top: every other command would pay for the agent, piscina and the addon.
      const { runAgent } = await import('../../../agent/run.js');
      await runAgent({ socketPath: socketPath(this.dataDir), hostId, leaseMs });
      return 0;
    }
    const agents = await this.call<Array<{ hostId: string; pid: number }>>('agent.ls');
    const running = agents.find((a) => a.hostId === hostId);
    if (running) throw new VdiskError(`the agent of ${hostId} is already running (pid ${running.pid})`, { code: 'EALREADY' });
    const pid = await startAgent(this, hostId, leaseMs);
    this.print(`vdisk agent ${hostId} started (pid ${pid}, log ${agentLogPath(this.dataDir, hostId)})`);
    return 0;
  }
}
