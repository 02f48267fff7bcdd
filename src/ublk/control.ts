// The ublk control device from TypeScript: opens /dev/ublk-control with a clear error when ublk is missing,
// and puts a timeout on every command (the native side runs each on its own thread; a kernel command that
// never returns must surface as ETIMEDOUT here instead of a hang).
import fs from 'node:fs';
import { VdiskError } from '../errors.js';
import { addon } from '../native/addon.js';
import type {
  CtrlCommand, DevInfoInput, NativeUblkControl, UblkParams, UblksrvCtrlDevInfo,
} from '../native/types.js';

export const UBLK_CONTROL_PATH = '/dev/ublk-control';

/** UBLK_F_* feature bits by kernel name (include/uapi/linux/ublk_cmd.h). */
export const UBLK_FEATURES: ReadonlyArray<[string, number]> = [
  ['UBLK_F_SUPPORT_ZERO_COPY', 0], ['UBLK_F_URING_CMD_COMP_IN_TASK', 1], ['UBLK_F_NEED_GET_DATA', 2],
  ['UBLK_F_USER_RECOVERY', 3], ['UBLK_F_USER_RECOVERY_REISSUE', 4], ['UBLK_F_UNPRIVILEGED_DEV', 5],
  ['UBLK_F_CMD_IOCTL_ENCODE', 6], ['UBLK_F_USER_COPY', 7], ['UBLK_F_ZONED', 8],
  ['UBLK_F_USER_RECOVERY_FAIL_IO', 9], ['UBLK_F_UPDATE_SIZE', 10], ['UBLK_F_AUTO_BUF_REG', 11],
  ['UBLK_F_QUIESCE', 12], ['UBLK_F_PER_IO_DAEMON', 13],
];
export const UBLK_F_USER_RECOVERY = 1n << 3n;
export const UBLK_F_USER_RECOVERY_REISSUE = 1n << 4n;
export const UBLK_F_CMD_IOCTL_ENCODE = 1n << 6n;

export const UBLK_S_DEV_DEAD = 0;
export const UBLK_S_DEV_LIVE = 1;
export const UBLK_S_DEV_QUIESCED = 2;

export function featureNames(flags: bigint): string[] {
  return UBLK_FEATURES.filter(([, bit]) => (flags >> BigInt(bit)) & 1n).map(([name]) => name);
}

export class UblkControlDevice {
  private constructor(private readonly native: NativeUblkControl, readonly timeoutMs: number) {}

  static open(path = UBLK_CONTROL_PATH, timeoutMs = 60_000): UblkControlDevice {
    if (!fs.existsSync(path)) {
      throw new VdiskError(`ublk is not available: ${path} does not exist (load the kernel module with ` +
        '"modprobe ublk_drv"; it needs Linux 6.0 or later built with CONFIG_BLK_DEV_UBLK)', { code: 'ENOENT', path, syscall: 'open' });
    }
    try {
      return new UblkControlDevice(new (addon().UblkControl)(path), timeoutMs);
    } catch (err) {
      const e = VdiskError.from(err);
      if (e.code === 'EACCES' || e.code === 'EPERM') {
        throw new VdiskError(`cannot open ${path}: permission denied (run as root)`, { code: e.code, errno: e.errno, syscall: 'open', path });
      }
      throw e;
    }
  }

  addDev(info: DevInfoInput, devId = -1): Promise<UblksrvCtrlDevInfo> {
    return this.timed('UBLK_U_CMD_ADD_DEV', devId, this.native.command('UBLK_U_CMD_ADD_DEV', devId >>> 0, info));
  }
  getDevInfo(devId: number): Promise<UblksrvCtrlDevInfo> {
    return this.timed('UBLK_U_CMD_GET_DEV_INFO', devId, this.native.command('UBLK_U_CMD_GET_DEV_INFO', devId));
  }
  setParams(devId: number, params: UblkParams): Promise<number> {
    return this.timed('UBLK_U_CMD_SET_PARAMS', devId, this.native.command('UBLK_U_CMD_SET_PARAMS', devId, params));
  }
  getParams(devId: number): Promise<UblkParams> {
    return this.timed('UBLK_U_CMD_GET_PARAMS', devId, this.native.command('UBLK_U_CMD_GET_PARAMS', devId));
  }
  startDev(devId: number, pid = process.pid): Promise<number> {
    return this.timed('UBLK_U_CMD_START_DEV', devId, this.native.command('UBLK_U_CMD_START_DEV', devId, pid));
  }
  stopDev(devId: number): Promise<number> {
    return this.timed('UBLK_U_CMD_STOP_DEV', devId, this.native.command('UBLK_U_CMD_STOP_DEV', devId));
  }
  delDev(devId: number): Promise<number> {
    return this.timed('UBLK_U_CMD_DEL_DEV', devId, this.native.command('UBLK_U_CMD_DEL_DEV', devId));
  }
  startUserRecovery(devId: number): Promise<number> {
    return this.timed('UBLK_U_CMD_START_USER_RECOVERY', devId, this.native.command('UBLK_U_CMD_START_USER_RECOVERY', devId));
  }
  endUserRecovery(devId: number, pid = process.pid): Promise<number> {
    return this.timed('UBLK_U_CMD_END_USER_RECOVERY', devId, this.native.command('UBLK_U_CMD_END_USER_RECOVERY', devId, pid));
  }
  /** UBLK_U_CMD_GET_FEATURES (6.5+); undefined on kernels that do not have it. */
  async getFeatures(): Promise<bigint | undefined> {
    try {
      return await this.timed('UBLK_U_CMD_GET_FEATURES', -1, this.native.command('UBLK_U_CMD_GET_FEATURES'));
    } catch (err) {
      const code = (err as VdiskError).code;
      if (code === 'EINVAL' || code === 'EOPNOTSUPP' || code === 'ENOTSUPP' || code === 'ENOTTY' || code === 'E524') return undefined;
      throw err;
    }
  }

  close(): void {
    this.native.close();
  }

  private timed<T>(cmd: CtrlCommand, devId: number, p: Promise<T>): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      // A referenced timer: the native completion is unreferenced, so this keeps the process alive meanwhile.
      timer = setTimeout(() => reject(new VdiskError(`${cmd} (dev ${devId}) did not complete within ${this.timeoutMs} ms`,
        { code: 'ETIMEDOUT', syscall: cmd })), this.timeoutMs);
    });
    return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
  }
}
