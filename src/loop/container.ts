// Opening a storage container (a regular file or a block device) for the data path: O_DIRECT where the
// file system allows it, with the size a block device reports through sysfs (fstat says 0 for those).
import fs from 'node:fs';
import { VdiskError } from '../errors.js';

export interface OpenContainer {
  fd: number;
  path: string;
  size: number;
  direct: boolean;
  blockDevice: boolean;
}

export function openContainer(path: string, opts: { direct: boolean; readOnly?: boolean }): OpenContainer {
  let st: fs.Stats;
  try {
    st = fs.statSync(path);
  } catch (err) {
    throw VdiskError.from(err, `cannot use ${path}`);
  }
  if (!st.isFile() && !st.isBlockDevice()) {
    throw new VdiskError(`cannot use ${path}: not a regular file or block device`, { code: 'EINVAL', path });
  }
  const size = st.isBlockDevice() ? blockDeviceSize(st) : st.size;
  const access = opts.readOnly ? fs.constants.O_RDONLY : fs.constants.O_RDWR;
  let fd: number;
  let direct = opts.direct;
  try {
    fd = fs.openSync(path, access | (direct ? fs.constants.O_DIRECT : 0));
  } catch (err) {
    // Some file systems (tmpfs before 6.6, 9p, overlay on those) refuse O_DIRECT: fall back to the page cache.
    if (!direct || (err as NodeJS.ErrnoException).code !== 'EINVAL') throw VdiskError.from(err, `cannot open ${path}`);
    direct = false;
    try {
      fd = fs.openSync(path, access);
    } catch (err2) {
      throw VdiskError.from(err2, `cannot open ${path}`);
    }
  }
  return { fd, path, size, direct, blockDevice: st.isBlockDevice() };
}

/** Size in bytes of the block device behind st, from sysfs (fstat reports 0 for block devices). */
export function blockDeviceSize(st: fs.Stats): number {
  const major = Math.floor(st.rdev / 256) & 0xfff;
  const minor = (st.rdev & 0xff) | ((st.rdev >> 12) & 0xfff00);
  const sectors = Number(fs.readFileSync(`/sys/dev/block/${major}:${minor}/size`, 'utf8').trim());
  return sectors * 512;
}
