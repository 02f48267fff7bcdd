// Storage containers on disk: a regular file (created sparse at the requested size when missing) or a
// block device (its size read from sysfs). The controller checks them before recording them.
import fs from 'node:fs';
import path from 'node:path';
import { VdiskError } from '../errors.js';
import { blockDeviceSize } from '../loop/container.js';

export function prepareContainer(file: string, size: number | undefined): { path: string; size: number; created: boolean } {
  const abs = path.resolve(file);
  let st: fs.Stats | undefined;
  try {
    st = fs.statSync(abs);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw VdiskError.from(err, `cannot use ${abs}`);
  }
  if (!st) {
    if (size === undefined) throw new VdiskError(`${abs} does not exist: give --size to create it`, { code: 'ENOENT', path: abs });
    try {
      fs.writeFileSync(abs, '', { flag: 'wx', mode: 0o600 });
    } catch (err) {
      throw VdiskError.from(err, `cannot create ${abs}`);
    }
    try {
      fs.truncateSync(abs, size);
    } catch (err) {
      fs.rmSync(abs, { force: true }); // made here, so removed here: a size the file system refuses leaves nothing
      throw VdiskError.from(err, `cannot create ${abs}`);
    }
    return { path: abs, size, created: true };
  }
  if (st.isBlockDevice()) {
    const devSize = blockDeviceSize(st);
    if (size !== undefined && size > devSize) throw new VdiskError(`${abs} holds only ${devSize} bytes`, { code: 'EINVAL', path: abs });
    return { path: abs, size: size ?? devSize, created: false };
  }
  if (!st.isFile()) throw new VdiskError(`${abs} is not a regular file or block device`, { code: 'EINVAL', path: abs });
  if (size !== undefined && size > st.size) fs.truncateSync(abs, size);
  return { path: abs, size: size ?? st.size, created: false };
}
