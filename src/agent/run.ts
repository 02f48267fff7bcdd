// Running an agent in this process until SIGINT/SIGTERM or the controller's agent.exit. On exit the devices
// stay behind, quiesced by the kernel (they were created with user recovery): the next agent for this host
// takes them over, which is also how the agent is upgraded without unmounting anything.
import { describeEndpoint, type Endpoint } from '../protocol/client.js';
import { Agent, DEFAULT_LEASE_MS } from './agent.js';
import { checkHostId } from './host-id.js';
import { UblkDevice } from '../ublk/device.js';

export async function runAgent(o: { controller: Endpoint; hostId: string; leaseMs?: number }): Promise<void> {
  checkHostId(o.hostId);
  const log = (m: string) => process.stderr.write(`${new Date().toISOString()} agent ${o.hostId}: ${m}\n`);
  const agent = new Agent({ ...o, leaseMs: o.leaseMs ?? DEFAULT_LEASE_MS, log });
  await agent.start();
  const onSignal = () => { void agent.stop(); };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  process.stdout.write(`vdisk agent ${o.hostId} (pid ${process.pid}) using ${describeEndpoint(o.controller)}\n`);
  await agent.exited;
  // Counted by worker pool, not by disk: a device whose stop (a detach) or recovery is still under way has
  // workers too, and no disk holds it meanwhile.
  const live = UblkDevice.poolsAlive;
  if (live > 0) {
    // Queue workers of live devices are parked in io_uring_enter and cannot be joined: process.exit would
    // never return (a `vdisk agent stop` with disks attached hung so). End as kill -9 does, the exit every
    // restart recovers from: the kernel quiesces the devices (user recovery) for the next agent of this host.
    log(`exiting with ${live} device(s) left quiesced for the next agent of this host`);
    process.kill(process.pid, 'SIGKILL');
  }
  process.exit(agent.refused ? 2 : 0);
}
