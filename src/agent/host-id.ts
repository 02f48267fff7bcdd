// Host ids name agents (one per host) in the controller's tables and in their log files. Kept apart from
// run.ts so that the CLI can check a --host-id without loading the agent, piscina and the addon.
import fs from 'node:fs';
import os from 'node:os';
import { VdiskError } from '../errors.js';

const HOST_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

/**
 * This host's id: its host name up to the first dot. A host with no name set reports "(none)", which is
 * no valid id: then one derived from /etc/machine-id (stable across reboots), else a clear error.
 */
export function defaultHostId(hostname = os.hostname(), machineIdFile = '/etc/machine-id'): string {
  const short = hostname.split('.')[0];
  if (HOST_ID.test(short)) return short;
  let machineId = '';
  try {
    machineId = fs.readFileSync(machineIdFile, 'utf8').trim();
  } catch {
    // no machine id either: say how to name the host
  }
  if (/^[0-9a-f]{12,}$/i.test(machineId)) return `host-${machineId.slice(0, 12).toLowerCase()}`;
  throw new VdiskError(`this host has no usable name ("${hostname}") and no ${machineIdFile}: set a host name (hostname NAME) or pass --host-id`, { code: 'EINVAL' });
}

export function checkHostId(id: string): void {
  if (!HOST_ID.test(id)) throw new VdiskError(`host id "${id}" must be 1-64 letters, digits, '.', '_' or '-'`, { code: 'EINVAL' });
}
