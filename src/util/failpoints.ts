// Named crash points at the durable steps of the controller's flows and the agent's table commands, for crash tests. Inert unless
// VDISK_FAILPOINT=name:N is set when the process starts: then the Nth pass through `name` kills the process
// with SIGKILL, as `kill -9` would (no cleanup, no exit handlers, nothing flushed that was not already).
import fs from 'node:fs';
import { VdiskError } from '../errors.js';

export const FAILPOINTS = {
  'staged.planned': 'a staged flow (thin fault, copy-on-write, migration step) reserved its segment',
  'staged.io': 'its zeroing or copy is done, the mapping not yet committed',
  'staged.committed': 'its mapping committed, the answer not yet sent',
  'batch.planned': 'a group-commit batch of thin faults reserved its segments',
  'batch.zeroed': 'the batch\'s segments are zeroed, their mappings not yet committed',
  'batch.committed': 'the batch\'s mappings committed, no answer sent yet',
  'sync.committed': 'a disk.sync made the lazy commits durable, the agent (its FLUSH waiting) not yet answered',
  'thick.reserved': 'a thick create reserved its runs',
  'thick.zeroed': 'a thick create zeroed its runs, the disk not yet created',
  'snapshot.committed': 'a snapshot committed (its No-write already on every agent), not yet answered',
  'clone.committed': 'a clone committed, not yet answered',
  'migrate.remapped': 'a migration step committed its remap, the agents not yet told',
  'rm.committed': 'a disk removal committed',
  'attach.recorded': 'an attach recorded its attachment, the device not yet started',
  'grant.committed': 'a grant of zeroed segments committed, the agent not yet answered',
  'container.labelled': 'a container add wrote and fdatasynced its label, the container not yet committed',
  // In the agent process.
  'agent.loaded': 'the agent installed a piece of a table load (attach, reconnect), not yet acknowledged',
  'agent.blocked': 'the agent applied a blocking change and drained the requests before it, not yet acknowledged',
  'agent.claimed': 'the agent claimed a granted segment while an earlier claim, whose write may have completed, is only in its claims file',
  'agent.cow-claimed': 'a queue wrote a whole shared segment to a grant and recorded its copy-on-write claim, the entry not yet installed',
  'agent.recovering': 'the agent started a device recovery (START_USER_RECOVERY), no queue has fetched yet',
  'agent.recovered': 'the agent recovered a quiesced device after a restart, not yet acknowledged',
} as const;

export type Failpoint = keyof typeof FAILPOINTS;

const armed = parse(process.env.VDISK_FAILPOINT);
let passes = 0;

function parse(spec: string | undefined): { name: Failpoint; n: number } | undefined {
  if (!spec) return undefined;
  const m = /^([a-z.-]+):(\d+)$/.exec(spec);
  if (!m || !(m[1] in FAILPOINTS) || Number(m[2]) < 1) {
    throw new VdiskError(`VDISK_FAILPOINT must be NAME:N with N >= 1 and NAME one of ${Object.keys(FAILPOINTS).join(', ')}; not "${spec}"`, { code: 'EINVAL' });
  }
  return { name: m[1] as Failpoint, n: Number(m[2]) };
}

/** A durable step of a flow: the process dies here on the armed pass. */
export function failpoint(name: Failpoint): void {
  if (armed?.name !== name || ++passes !== armed.n) return;
  // fd 2 directly: in a worker thread process.stderr goes through the main thread, too late for a kill -9.
  fs.writeSync(2, `vdisk: failpoint ${name}:${armed.n} reached: killing this process\n`);
  process.kill(process.pid, 'SIGKILL');
}
