// `vdisk agent start`: the agent of this host, in the background (or in this process with --foreground).
// It connects to the controller, which then gives it (or makes it recover) the disks attached to its host id:
// on this host through the Unix socket, from another host with --controller ADDR:PORT --credential FILE.
import { Command, Option, UsageError } from 'clipanion';
import { VdiskError } from '../../../errors.js';
import { agentLogPath, socketPath } from '../../../controller/paths.js';
import { hostIdOption, hostPort } from '../../base.js';
import { ControllerCommand } from '../../controller-command.js';
import { startAgent, startRemoteAgent } from '../../agent-starter.js';
import { readCredential } from '../../../protocol/credential.js';
import type { TlsEndpoint } from '../../../protocol/client.js';
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
  controller = Option.String('--controller', { description: 'the controller of another host, ADDR:PORT (its --listen), reached over TLS' });
  credential = Option.String('--credential', { description: 'this host\'s credential file (vdisk host add), with --controller' });

  async run(): Promise<number> {
    const leaseMs = this.lease === undefined ? DEFAULT_LEASE_MS : Math.round(Number(this.lease) * 1000);
    if (!validLease(leaseMs)) throw new UsageError(`--lease must be a number of seconds from ${MIN_LEASE_MS / 1000} to ${MAX_LEASE_MS / 1000}, not "${this.lease}"`);
    if ((this.controller === undefined) !== (this.credential === undefined)) throw new UsageError('--controller and --credential go together');
    if (this.controller !== undefined) return this.runRemote(this.controller, this.credential as string, leaseMs);
    const hostId = hostIdOption(this.hostId);
    if (this.foreground) {
      // Loaded here, not at the top: every other command would pay for the agent, piscina and the addon.
      const { runAgent } = await import('../../../agent/run.js');
      await runAgent({ controller: socketPath(this.dataDir), hostId, leaseMs });
      return 0;
    }
    const agents = await this.call<Array<{ hostId: string; pid: number }>>('agent.ls');
    const running = agents.find((a) => a.hostId === hostId);
    if (running) throw new VdiskError(`the agent of ${hostId} is already running (pid ${running.pid})`, { code: 'EALREADY' });
    const pid = await startAgent(this, hostId, leaseMs);
    this.print(`vdisk agent ${hostId} started (pid ${pid}, log ${agentLogPath(this.dataDir, hostId)})`);
    return 0;
  }

  /**
   * The agent of another host: the host id is the credential's (a --host-id is sent as given, and the
   * controller refuses one that disagrees with the certificate). Readiness is read from the agent's log,
   * since this host has no CLI access to the controller.
   */
  private async runRemote(addr: string, file: string, leaseMs: number): Promise<number> {
    const { host, port } = hostPort('--controller', addr);
    const credential = readCredential(file);
    const hostId = this.hostId === undefined ? credential.hostId : hostIdOption(this.hostId);
    const endpoint: TlsEndpoint = { host, port, credential };
    if (this.foreground) {
      const { runAgent } = await import('../../../agent/run.js');
      await runAgent({ controller: endpoint, hostId, leaseMs });
      return 0;
    }
    const pid = await startRemoteAgent(this.dataDir, { addr, credentialFile: file, hostId, leaseMs });
    this.print(`vdisk agent ${hostId} started (pid ${pid}, controller ${addr}, log ${agentLogPath(this.dataDir, hostId)})`);
    return 0;
  }
}
