// Starting an agent in the background from the CLI (`vdisk agent start`, and `vdisk attach` when the host
// has none): success once the controller lists that very process as the host's agent. A remote host's agent
// (no CLI access to the controller there) is up once its log says it registered.
import fs from 'node:fs';
import path from 'node:path';
import { agentLogPath } from '../controller/paths.js';
import { ensureDir } from '../util/dirs.js';
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

/** What the agent logs once the controller took its registration (agent.ts). */
const REGISTERED = 'connected to the controller';

export async function startRemoteAgent(dataDir: string, o: { addr: string; credentialFile: string; hostId: string; leaseMs: number }): Promise<number> {
  ensureDir(dataDir);
  const log = agentLogPath(dataDir, o.hostId);
  const from = fs.existsSync(log) ? fs.statSync(log).size : 0;
  const args = ['agent', 'start', '--controller', o.addr, '--credential', path.resolve(o.credentialFile), '--host-id', o.hostId,
    '--lease', String(o.leaseMs / 1000), '--data-dir', dataDir];
  return spawnDaemon(`agent of ${o.hostId}`, args, log, async (pid) => {
    const fd = fs.openSync(log, 'r');
    try {
      const size = fs.fstatSync(fd).size;
      const buf = Buffer.alloc(Math.max(0, size - from));
      fs.readSync(fd, buf, 0, buf.length, from);
      return buf.toString().includes(`agent ${o.hostId}: ${REGISTERED}`) && pid > 0;
    } finally {
      fs.closeSync(fd);
    }
  });
}
