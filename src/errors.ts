// The one error class of vdisk. System failures (from the addon or from Node's fs) carry the errno name
// in `code`, the negative errno in `errno` and the failing call in `syscall`, like Node's own errors.
export interface ErrorInfo {
  code?: string;
  errno?: number;
  syscall?: string;
  path?: string;
  cause?: unknown;
}

export class VdiskError extends Error {
  readonly code: string;
  readonly errno: number | undefined;
  readonly syscall: string | undefined;
  readonly path: string | undefined;

  constructor(message: string, info: ErrorInfo = {}) {
    super(message, info.cause === undefined ? undefined : { cause: info.cause });
    this.name = 'VdiskError';
    this.code = info.code ?? 'EVDISK';
    this.errno = info.errno;
    this.syscall = info.syscall;
    this.path = info.path;
  }

  /** Wraps any thrown value, keeping code/errno/syscall of Node system errors. */
  static from(err: unknown, context?: string): VdiskError {
    if (err instanceof VdiskError && context === undefined) return err;
    const e = err as NodeJS.ErrnoException;
    const message = context ? `${context}: ${e?.message ?? String(err)}` : (e?.message ?? String(err));
    return new VdiskError(message, {
      code: typeof e?.code === 'string' ? e.code : undefined,
      errno: typeof e?.errno === 'number' ? e.errno : undefined,
      syscall: e?.syscall,
      path: e?.path,
      cause: err,
    });
  }
}
