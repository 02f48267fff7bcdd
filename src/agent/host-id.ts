// Host ids name agents (one per host) in the controller's tables and in their log files. Kept apart from
// run.ts so that the CLI can check a --host-id without loading the agent, piscina and the addon.
import os from 'node:os';
import { VdiskError } from '../errors.js';

const HOST_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

export function defaultHostId(): string {
  return os.hostname().split('.')[0] || 'localhost';
}

export function checkHostId(id: string): void {
  if (!HOST_ID.test(id)) throw new VdiskError(`host id "${id}" must be 1-64 letters, digits, '.', '_' or '-'`, { code: 'EINVAL' });
}
