// Who may send each controller request, by the role its connection declared in its hello, and how many
// requests a connection of each role may have served at once.
import type { Role } from '../protocol/messages.js';

const CLI: readonly Role[] = ['cli'];
const AGENT: readonly Role[] = ['agent'];
const ANYONE: readonly Role[] = ['cli', 'agent'];

/**
 * Who may send each request: the role its connection declared in its hello. The CLI (and the benches and
 * tests that speak as it) manages; an agent registers, pings, asks faults and reports I/O errors, nothing
 * else (src/agent/agent.ts). A request from another role is refused with EPERM before its handler runs, so
 * an agent cannot stop the controller or remove a disk. `handlers` must have exactly these operations.
 */
export const REQUEST_ROLES = {
  'controller.status': ANYONE, // changes nothing: any peer may check that the controller answers
  'controller.backup': CLI,
  'stats': CLI,
  'controller.stop': CLI,
  'container.add': CLI,
  'container.set': CLI,
  'container.ls': CLI,
  'container.rm': CLI,
  'container.fail': CLI,
  'disk.create': CLI,
  'disk.ls': CLI,
  'disk.info': CLI,
  'disk.migrate': CLI,
  'disk.snapshot': CLI,
  'disk.clone': CLI,
  'disk.fold': CLI,
  'check': CLI,
  'disk.attach': CLI,
  'disk.detach': CLI,
  'disk.states': CLI,
  'attachment.ls': CLI,
  'agent.ls': CLI,
  'agent.stop': CLI,
  'agent.register': AGENT,
  'agent.ping': AGENT,
  'disk.ioerror': AGENT,
  'fault': AGENT,
  'fault.ahead': AGENT,
  'disk.sync': AGENT,
  'disk.grant': AGENT,
  'disk.rm': CLI,
  'host.add': CLI,
  'host.ls': CLI,
  'host.rm': CLI,
} satisfies Record<string, readonly Role[]>;
export type Op = keyof typeof REQUEST_ROLES;

/**
 * Requests served at once per connection, by role; more are refused with EBUSY. The CLI sends one request
 * per connection (the tests a few), so a cli peer that pipelines hundreds gets EBUSY, not a controller that
 * holds them all. Agents are not bounded here: their faults in flight are bounded by their devices' queue
 * depths, and the agent fails a refused fault's I/O with EIO and counts no contact for a refused ping (its
 * lease may expire): bounding agents needs the agent to retry on EBUSY first.
 */
export const MAX_SERVING: Record<Role, number> = { cli: 64, agent: Infinity };
