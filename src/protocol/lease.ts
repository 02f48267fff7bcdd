// The lease contract between an agent and the controller, in one place both sides import. An agent that has
// not reached the controller for leaseMs makes its tables Invalid and drains the requests planned with them;
// the controller acts on an unreachable agent's disks (remaps, reuses segments) only after the agent's worst
// case for all of that: the lease, one lease check late, the drain budget, and timer slack.

export const DEFAULT_LEASE_MS = 10_000;

/**
 * The leases an agent may hold: `vdisk agent start --lease` takes 0.5 to 3600 s, the agent refuses others and
 * the controller refuses them at agent.register. Blocking changes to a lost agent's disks wait out fenceMs of
 * its lease, so an unbounded one would hold them forever; one too short would suspend I/O at every hiccup.
 */
export const MIN_LEASE_MS = 500;
export const MAX_LEASE_MS = 3_600_000;

/** Whether ms (a peer's value) is a lease in that range, in whole milliseconds. */
export function validLease(ms: unknown): ms is number {
  return typeof ms === 'number' && Number.isSafeInteger(ms) && ms >= MIN_LEASE_MS && ms <= MAX_LEASE_MS;
}

export function leaseRangeText(): string {
  return `${MIN_LEASE_MS} to ${MAX_LEASE_MS} ms (${MIN_LEASE_MS / 1000} to ${MAX_LEASE_MS / 1000} s)`;
}

/** How often the agent checks its lease: it notices an expiry at most this late. */
export function leaseCheckMs(leaseMs: number): number {
  return Math.max(50, Math.floor(leaseMs / 10));
}

/** How long a suspending agent gives requests planned before the suspension to complete. */
export function leaseDrainMs(leaseMs: number): number {
  return Math.max(1000, Math.floor(leaseMs / 2));
}

/** Timer granularity and scheduling delay, on both sides. */
export const TIMER_SLACK_MS = 250;

/**
 * From the controller's last exchange with an agent (or the moment their link dropped, which is later), how
 * long until the agent has certainly suspended and drained: its lease counts from its own last contact,
 * which is no later than that.
 */
export function fenceMs(leaseMs: number): number {
  return leaseMs + leaseCheckMs(leaseMs) + leaseDrainMs(leaseMs) + TIMER_SLACK_MS;
}
