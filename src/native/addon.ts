// Loads the addon once per thread (main or worker), registers VdiskError as the class of its errors and
// checks the batch ABI constants against src/native/abi.ts.
import fs from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { VdiskError } from '../errors.js';
import * as abi from './abi.js';
import type { NativeAddon } from './types.js';

let loaded: NativeAddon | undefined;

/**
 * The directory holding package.json above this module: dist/native/ when installed, dist-test/src/native/
 * when the tests run their compiled copy. node-gyp's build/ sits there.
 */
function packageRoot(from: string): string {
  for (let dir = from; ; dir = path.dirname(dir)) {
    if (fs.existsSync(path.join(dir, 'package.json'))) return dir;
    if (path.dirname(dir) === dir) throw new VdiskError(`no package.json above ${from}: cannot find the addon`, { code: 'ENOENT' });
  }
}

export function addon(): NativeAddon {
  if (loaded) return loaded;
  const root = packageRoot(path.dirname(fileURLToPath(import.meta.url)));
  const require = createRequire(import.meta.url);
  const mod = require(path.join(root, 'build', 'Release', 'vdisk.node')) as NativeAddon;
  mod.setErrorClass(VdiskError);
  const c = mod.constants;
  const expected: Array<[string, number, number]> = [
    ['READY_STRIDE', c.READY_STRIDE, abi.READY_STRIDE],
    ['PLAN_STRIDE', c.PLAN_STRIDE, abi.PLAN_STRIDE],
    ['STATUS_LEN', c.STATUS_LEN, abi.STATUS_LEN],
    ['OP_READ', c.OP_READ, abi.OP_READ],
    ['OP_WRITE', c.OP_WRITE, abi.OP_WRITE],
    ['OP_FDATASYNC', c.OP_FDATASYNC, abi.OP_FDATASYNC],
    ['OP_FALLOCATE', c.OP_FALLOCATE, abi.OP_FALLOCATE],
    ['OP_ZERO', c.OP_ZERO, abi.OP_ZERO],
    ['OP_COMMIT', c.OP_COMMIT, abi.OP_COMMIT],
    ['COMPLETED_IO_ERROR', c.COMPLETED_IO_ERROR, abi.COMPLETED_IO_ERROR],
  ];
  for (const [name, native, ts] of expected) {
    if (native !== ts) throw new VdiskError(`addon ABI mismatch: ${name} is ${native} in C++, ${ts} in TypeScript`, { code: 'EABI' });
  }
  loaded = mod;
  return mod;
}
