// The typed contract of the native addon (build/Release/vdisk.node). Every function the addon exports is
// declared here and nowhere else; field names follow the kernel's struct members in camelCase.

/** struct ublksrv_ctrl_dev_info */
export interface UblksrvCtrlDevInfo {
  nrHwQueues: number;
  queueDepth: number;
  state: number;
  maxIoBufBytes: number;
  devId: number;
  ublksrvPid: number;
  flags: bigint;
  ublksrvFlags: bigint;
  ownerUid: number;
  ownerGid: number;
}

export type DevInfoInput = Pick<UblksrvCtrlDevInfo, 'nrHwQueues' | 'queueDepth' | 'maxIoBufBytes'> & {
  flags: bigint;
  ublksrvFlags?: bigint;
};

/** struct ublk_param_basic */
export interface UblkParamBasic {
  attrs: number;
  logicalBsShift: number;
  physicalBsShift: number;
  ioOptShift: number;
  ioMinShift: number;
  maxSectors: number;
  chunkSectors: number;
  devSectors: number;
  virtBoundaryMask: number;
}

/** struct ublk_param_discard */
export interface UblkParamDiscard {
  discardAlignment: number;
  discardGranularity: number;
  maxDiscardSectors: number;
  maxWriteZeroesSectors: number;
  maxDiscardSegments: number;
}

/** struct ublk_params (the parts vdisk sets) */
export interface UblkParams {
  types?: number;
  basic?: UblkParamBasic;
  discard?: UblkParamDiscard;
}

export type CtrlCommand =
  | 'UBLK_U_CMD_GET_DEV_INFO'
  | 'UBLK_U_CMD_ADD_DEV'
  | 'UBLK_U_CMD_DEL_DEV'
  | 'UBLK_U_CMD_START_DEV'
  | 'UBLK_U_CMD_STOP_DEV'
  | 'UBLK_U_CMD_SET_PARAMS'
  | 'UBLK_U_CMD_GET_PARAMS'
  | 'UBLK_U_CMD_START_USER_RECOVERY'
  | 'UBLK_U_CMD_END_USER_RECOVERY'
  | 'UBLK_U_CMD_GET_FEATURES';

export interface NativeUblkControl {
  command(cmd: 'UBLK_U_CMD_ADD_DEV', devId: number, info: DevInfoInput): Promise<UblksrvCtrlDevInfo>;
  command(cmd: 'UBLK_U_CMD_GET_DEV_INFO', devId: number): Promise<UblksrvCtrlDevInfo>;
  command(cmd: 'UBLK_U_CMD_SET_PARAMS', devId: number, params: UblkParams): Promise<number>;
  command(cmd: 'UBLK_U_CMD_GET_PARAMS', devId: number): Promise<UblkParams>;
  command(cmd: 'UBLK_U_CMD_GET_FEATURES', devId?: number): Promise<bigint>;
  command(cmd: 'UBLK_U_CMD_START_DEV' | 'UBLK_U_CMD_END_USER_RECOVERY', devId: number, pid: number): Promise<number>;
  command(cmd: 'UBLK_U_CMD_DEL_DEV' | 'UBLK_U_CMD_STOP_DEV' | 'UBLK_U_CMD_START_USER_RECOVERY', devId: number): Promise<number>;
  close(): void;
}

export interface UblkQueueOptions {
  cdevFd: number;
  qId: number;
  depth: number;
  maxIoBufBytes: number;
  /** An eventfd (from eventfd()) that wakes run(); borrowed, the caller closes it after close(). */
  wakeFd: number;
  /** Use ioctl-encoded UBLK_U_IO_* opcodes (the device's flags carry UBLK_F_CMD_IOCTL_ENCODE). */
  encoded: boolean;
  ready: Uint32Array;
  plan: Int32Array;
  /** depth entries: the tags committed during the last run() (count in status[STATUS_COMPLETED]) */
  completed: Uint32Array;
  status: Int32Array;
}

/** One ublk queue; every call must come from the thread that constructed it. */
export interface NativeUblkQueue {
  fetchAll(): void;
  /** Executes plan records [0, nOps) and returns the number of new requests in the ready buffer. */
  run(nOps: number, wait: boolean, timeoutMs?: number, returnOnCommit?: boolean): number;
  /**
   * pwrite(2), synchronous, of the first `length` bytes of `tag`'s buffer (a WRITE's data) at `offset` of
   * `fd`: a copy-on-write claim's data, which must be in place before its entry is installed. Returns the
   * bytes written; throws a VdiskError (syscall 'pwrite').
   */
  writeTag(tag: number, fd: number, length: number, offset: number): number;
  /**
   * Copies `length` bytes from `fromOffset` of `fromFd` to `toOffset` of `toFd`, synchronously, through a
   * page-aligned buffer: the rest of a shared segment around a copy-on-write claim's write. Throws a
   * VdiskError (syscall 'pread' or 'pwrite').
   */
  copy(fromFd: number, fromOffset: number, toFd: number, toOffset: number, length: number): void;
  close(): void;
}

export interface NativeConstants {
  READY_STRIDE: number;
  PLAN_STRIDE: number;
  STATUS_LEN: number;
  OP_READ: number;
  OP_WRITE: number;
  OP_FDATASYNC: number;
  OP_FALLOCATE: number;
  OP_ZERO: number;
  OP_COMMIT: number;
  COMPLETED_IO_ERROR: number;
  UBLK_MAX_QUEUE_DEPTH: number;
  UBLK_F_CMD_IOCTL_ENCODE: bigint;
}

export interface NativeAddon {
  UblkControl: new (path?: string) => NativeUblkControl;
  UblkQueue: new (options: UblkQueueOptions) => NativeUblkQueue;
  setErrorClass(ctor: new (message: string, info: object) => Error): void;
  eventfd(): number;
  eventfdWrite(fd: number): void;
  /** fallocate(2) on libuv's thread pool; rejects with a VdiskError (syscall 'fallocate') on failure. */
  fallocate(fd: number, mode: number, offset: number, length: number): Promise<void>;
  /**
   * pread(2) of `length` bytes at `offset` (both multiples of 4096) into page-aligned memory, for a descriptor
   * opened O_DIRECT; zeros past the end. Synchronous. Throws a VdiskError (syscall 'pread') on failure.
   */
  preadDirect(fd: number, length: number, offset: number): Buffer;
  constants: NativeConstants;
}
