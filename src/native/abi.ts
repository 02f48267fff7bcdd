// Batch ABI shared with native/queue_abi.h: record strides and field indices of the ready, plan and status
// buffers. The addon exports its own values and src/native/addon.ts refuses to load if they differ.
export const READY_STRIDE = 8;
export const READY_TAG = 0;
export const READY_OP_FLAGS = 1;
export const READY_NR_SECTORS = 2;
export const READY_SECTOR_LO = 3;
export const READY_SECTOR_HI = 4;

export const PLAN_STRIDE = 8;
export const PLAN_OP = 0;
export const PLAN_TAG = 1;
export const PLAN_FD = 2; // OP_COMMIT: the result
export const PLAN_FLAGS = 3;
export const PLAN_BUF_OFF = 4;
export const PLAN_LEN = 5;
export const PLAN_OFF_LO = 6;
export const PLAN_OFF_HI = 7;

export const OP_READ = 1;
export const OP_WRITE = 2;
export const OP_FDATASYNC = 3;
export const OP_FALLOCATE = 4;
export const OP_ZERO = 5;
export const OP_COMMIT = 6;

/** Flag on a completed-tags entry: the request failed in its backing I/O (not on purpose). */
export const COMPLETED_IO_ERROR = 0x80000000;

/** Backing operations one request may need at most (native reserves this many slots per tag). */
export const MAX_OPS_PER_TAG = 16;

export const STATUS_LEN = 9;
export const STATUS_IN_KERNEL = 0;
export const STATUS_OWNED = 1;
export const STATUS_INFLIGHT = 2;
export const STATUS_ABORTED = 3;
export const STATUS_WAKEUPS = 4;
export const STATUS_LAST_ERROR = 5;
/** How many tags run() committed during its last call, listed in the completed buffer. */
export const STATUS_COMPLETED = 6;
/** Plan records run() refused (bad op, tag or range) since the queue was made: each failed its request with EIO. */
export const STATUS_BAD_RECORDS = 7;
/** Requests committed with an error (negative result) since the queue was made. */
export const STATUS_FAILED = 8;

// Kernel constants (include/uapi/linux/ublk_cmd.h, linux/fs.h, linux/falloc.h).
export const UBLK_IO_OP_READ = 0;
export const UBLK_IO_OP_WRITE = 1;
export const UBLK_IO_OP_FLUSH = 2;
export const UBLK_IO_OP_DISCARD = 3;
export const UBLK_IO_OP_WRITE_SAME = 4;
export const UBLK_IO_OP_WRITE_ZEROES = 5;
export const UBLK_IO_F_FUA = 1 << 13;
export const UBLK_IO_F_NOUNMAP = 1 << 15;
export const EIO = 5;
export const EOPNOTSUPP = 95;
export const RWF_DSYNC = 0x2;
export const FALLOC_FL_KEEP_SIZE = 0x1;
export const FALLOC_FL_PUNCH_HOLE = 0x2;
export const FALLOC_FL_ZERO_RANGE = 0x10;
