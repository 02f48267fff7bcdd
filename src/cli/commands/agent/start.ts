// `vdisk agent start`: the agent of this host, in the background (or in this process with --foreground).
// It connects to the controller, which then gives it (or makes it recover) the disks attached to its host id.
import { Command, Option, UsageError } from 'clipanion';
import { VdiskError } from '../../../errors.js';
import { agentLogPath, socketPath } from '../../../controller/paths.js';
import { hostIdOption } from '../../base.js';
import { ControllerCommand } from '../../controller-command.js';
import { startAgent } from '../../agent-starter.js';
import { DEFAULT_LEASE_MS, MAX_LEASE_MS, MIN_LEASE_MS, validLease } from '../../../protocol/lease.js';

export class AgentStartCommand extends ControllerCommand {
  static override paths = [['agent', 'start']];
  static override usage = Command.Usage({
    description: 'start the agent that serves this host\'s disks',
    details: 'Attach starts one on demand. Devices survive the agent: a new agent for the same host id takes them over.',
  });

  hostId = Option.String('--host-id', { description: 'this host\'s id (default: the host name)' });
  lease = Option.String('--lease', { description: 'seconds without the controller before I/O is suspended, 0.5 to 3600 (default 10)' });
  foreground = Option.Boolean('--foreground', false, { description: 'run in this process instead of in the background' });

  async run(): Promise<number> {
    const hostId = hostIdOption(this.hostId);
    const leaseMs = this.lease === undefined ? DEFAULT_LEASE_MS : Math.round(Number(this.lease) * 1000);
    if (!validLease(leaseMs)) throw new UsageError(`--lease must be a number of seconds from ${MIN_LEASE_MS / 1000} to ${MAX_LEASE_MS / 1000}, not "${this.lease}"`);
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
