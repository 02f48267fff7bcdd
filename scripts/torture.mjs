// `npm run torture`: the full torture suite (issue 12), the same test files CI runs in their bounded form,
// at full size: every failpoint at its first and a later pass (crash-matrix), 20 kills of the agent and 20
// of the controller (kill-loop), container faults (agent-dm), and 10,000 fuzzed protocol frames on this host
// (protocol-fuzz). Type-checks first (the tests run compiled from dist-test/). Prints each part's table.
//
//   npm run torture [-- --seed N]
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const seedAt = process.argv.indexOf('--seed');
const env = {
  ...process.env,
  VDISK_TORTURE: 'full',
  VDISK_FUZZ_FRAMES: process.env.VDISK_FUZZ_FRAMES ?? '10000',
  ...(seedAt > 0 ? { VDISK_TORTURE_SEED: process.argv[seedAt + 1], VDISK_FUZZ_SEED: process.argv[seedAt + 1] } : {}),
};
const step = (name, cmd, args) => {
  console.log(`\n== torture: ${name}`);
  const t0 = Date.now();
  const r = spawnSync(cmd, args, { cwd: root, env, stdio: 'inherit' });
  console.log(`== torture: ${name}: exit ${r.status} in ${((Date.now() - t0) / 1000).toFixed(0)} s`);
  return r.status ?? 1;
};

const failed = [];
if (step('type-check', path.join(root, 'node_modules', '.bin', 'tsc'), ['-p', 'tsconfig.json']) !== 0) process.exit(1);
if (step('protocol fuzz (host)', process.execPath, [path.join(root, 'scripts', 'run-tests.mjs'), '--timeout', '1800',
  'dist-test/test/unit/protocol-fuzz.test.js']) !== 0) failed.push('protocol fuzz');
// The three files side by side, as in CI: each kills and restarts only its own cluster's processes.
env.VDISK_TEST_JOBS = '3';
env.VDISK_TEST_FILE_TIMEOUT = '3600';
env.VDISK_VM_TIMEOUT = '9000';
if (step('crash matrix, kill loops, container faults (VM)', process.execPath, [path.join(root, 'scripts', 'integration.mjs'),
  'test/integration/crash-matrix.test.ts', 'test/integration/crash-matrix-2.test.ts', 'test/integration/kill-loop.test.ts', 'test/integration/agent-dm.test.ts']) !== 0) {
  failed.push('VM part');
}
console.log(failed.length ? `\ntorture: FAILED: ${failed.join(', ')}` : '\ntorture: every part passed');
process.exit(failed.length ? 1 : 0);
