// Starting an agent in the background from the CLI (`vdisk agent start`, and `vdisk attach` when the host
// has none): success once the controller lists that very process as the host's agent.
import { agentLogPath } from '../controller/paths.js';
import type { ControllerCommand } from './controller-command.js';
import { spawnDaemon } from './daemon.js';

export async function startAgent(cmd: ControllerCommand, hostId: string, leaseMs?: number): Promise<number> {
  const args = ['agent', 'start', '--host-id', hostId, '--data-dir', cmd.dataDir];
  if (leaseMs !== undefined) args.push('--lease', String(leaseMs / 1000));
  return spawnDaemon(`agent of ${hostId}`, args, agentLogPath(cmd.dataDir, hostId), async (pid) => {
    const agents = await cmd.call<Array<{ hostId: string; pid: number }>>('agent.ls').catch(() => []);
    return agents.some((a) => a.hostId === hostId && a.pid === pid);
  });
}
