// Names of containers, disks and snapshots: one rule, checked by the store and, before anything is sent, by
// the CLI (where a bad name is a usage mistake, exit 1, not a failure).
import { VdiskError } from '../errors.js';

const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

export function checkName(kind: string, name: string): void {
  if (!NAME.test(name)) throw new VdiskError(`${kind} name "${name}" must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit`, { code: 'EINVAL' });
}
