// Creating data directories. Node's recursive mkdirSync loops forever when mkdir(2) answers ENOENT for a
// path whose parent exists (a directory under /proc, for one): `--data-dir /proc/x` spun at 100% CPU.
// This walks up once, creates each missing level itself, and gives up with the error mkdir gave.
import fs from 'node:fs';
import path from 'node:path';
import { VdiskError } from '../errors.js';

export function ensureDir(dir: string, mode = 0o700): void {
  const abs = path.resolve(dir);
  try {
    if (fs.statSync(abs).isDirectory()) return;
    throw new VdiskError(`${abs} exists and is not a directory`, { code: 'ENOTDIR', path: abs });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err instanceof VdiskError ? err : VdiskError.from(err, `cannot use ${abs}`);
  }
  const parent = path.dirname(abs);
  if (parent !== abs) ensureDir(parent, mode);
  try {
    fs.mkdirSync(abs, { mode });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST' && fs.statSync(abs).isDirectory()) return;
    throw VdiskError.from(err, `cannot create ${abs}`);
  }
}
