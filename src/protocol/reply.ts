// Turning what a request handler returned or threw into the parts of a 'res' message: the result and
// optional payload, or an error code and message that the peer's validation will accept.

/** What a request handler may return to attach a payload; any other value is the result itself. */
export interface HandlerReply { result?: unknown; payload?: Uint8Array }

/**
 * A value counts as a HandlerReply only if it is a plain object whose own keys are all "result" or
 * "payload" (and payload, if set, is bytes); a handler whose result is literally {result: x} must wrap it.
 */
export function unwrapReply(v: unknown): HandlerReply {
  if (typeof v !== 'object' || v === null || Array.isArray(v) || ArrayBuffer.isView(v)) return { result: v };
  const keys = Object.keys(v);
  const r = v as HandlerReply;
  const isReply = keys.length > 0 && keys.every((k) => k === 'result' || k === 'payload') &&
    (r.payload === undefined || r.payload instanceof Uint8Array);
  return isReply ? r : { result: v };
}

/** The error's string code, or the fallback when it has none that fits on the wire (1..128 characters). */
export function errorCode(err: unknown, fallback = 'EFAIL'): string {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' && code.length > 0 && code.length <= 128 ? code : fallback;
}

export function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
