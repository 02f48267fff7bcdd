// Validation of request arguments (controller and agent side): a client (or a malformed peer) gets a clear
// EINVAL naming the argument, never a crash or a half-done change.
import { VdiskError } from '../errors.js';
import { isPlainObject } from './frame.js';

function bad(name: string, what: string): never {
  throw new VdiskError(`argument ${name} must be ${what}`, { code: 'EINVAL' });
}

export function str(args: Record<string, unknown>, name: string): string {
  const v = args[name];
  if (typeof v !== 'string' || v.length === 0 || v.length > 4096) bad(name, 'a non-empty string');
  return v;
}

export function optStr(args: Record<string, unknown>, name: string): string | undefined {
  return args[name] === undefined ? undefined : str(args, name);
}

export function int(args: Record<string, unknown>, name: string): number {
  const v = args[name];
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) bad(name, 'a non-negative whole number');
  return v;
}

export function optInt(args: Record<string, unknown>, name: string): number | undefined {
  return args[name] === undefined ? undefined : int(args, name);
}

export function bool(args: Record<string, unknown>, name: string): boolean {
  const v = args[name];
  if (v === undefined) return false;
  if (typeof v !== 'boolean') bad(name, 'true or false');
  return v;
}

/** A list of objects (each element's fields are the caller's to check); absent is empty. */
export function optObjects(args: Record<string, unknown>, name: string): Array<Record<string, unknown>> {
  const v = args[name];
  if (v === undefined) return [];
  if (!Array.isArray(v) || !v.every(isPlainObject)) bad(name, 'a list of objects');
  return v;
}

/** A list of objects that must be present (each element's fields are the caller's to check). */
export function objects(args: Record<string, unknown>, name: string): Array<Record<string, unknown>> {
  if (args[name] === undefined) bad(name, 'a list of objects');
  return optObjects(args, name);
}
