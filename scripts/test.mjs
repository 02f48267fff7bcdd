// `npm test`: lint, type-check (which also compiles src and test to dist-test/: the tests run as plain
// JavaScript, with no per-file transpile), build, unit tests on this host, then the integration tests on a
// real ublk kernel (natively or in the QEMU VM). Each step prints its time and the test steps a per-file
// table; ends with one plain line "tests: N passed, N failed" summing every run; exits non-zero if any
// step failed.
import fs from 'node:fs';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const bin = (name) => path.join(root, 'node_modules', '.bin', name);
const steps = [
  ['lint', bin('eslint'), ['.']],
  ['typecheck', bin('tsc'), ['-p', 'tsconfig.json']],
  ['build', bin('tsc'), ['-p', 'tsconfig.build.json']],
  // Listed when the step starts: the typecheck step before it writes dist-test/.
  ['unit', process.execPath, () => [path.join(root, 'scripts', 'run-tests.mjs'), '--jobs', '2', '--timeout', '300', ...unitFiles()]],
  ['integration', process.execPath, [path.join(root, 'scripts', 'integration.mjs')]],
];

/** The compiled unit tests (dist-test/ is written by the typecheck step) and the harness's own .mjs tests. */
function unitFiles() {
  const ts = fs.readdirSync(path.join(root, 'test', 'unit')).filter((f) => f.endsWith('.test.ts')).map((f) => `dist-test/test/unit/${f.replace(/\.ts$/, '.js')}`);
  const mjs = fs.readdirSync(path.join(root, 'test', 'unit')).filter((f) => f.endsWith('.test.mjs')).map((f) => `test/unit/${f}`);
  return [...ts, ...mjs];
}

let passed = 0;
let failed = 0;
const failedSteps = [];

function runStep(name, cmd, args) {
  return new Promise((resolve) => {
    console.log(`\n== ${name}: ${path.basename(cmd)} ${args.join(' ')}`);
    const child = spawn(cmd, args, { cwd: root, stdio: ['ignore', 'pipe', 'inherit'] });
    let tail = '';
    child.stdout.on('data', (d) => {
      process.stdout.write(d);
      tail = (tail + d).slice(-4096);
      // tap's closing summary: "# { total: 98, pass: 96, fail: 1, skip: 1 }"
      for (const m of String(d).matchAll(/^# \{ total: \d+(.*)\}$/gm)) {
        passed += Number(/pass: (\d+)/.exec(m[1])?.[1] ?? 0);
        failed += Number(/fail: (\d+)/.exec(m[1])?.[1] ?? 0);
      }
    });
    child.on('close', (code) => resolve(code ?? 1));
  });
}

const times = [];
for (const [name, cmd, args] of steps) {
  const t0 = Date.now();
  const code = await runStep(name, cmd, typeof args === 'function' ? args() : args);
  times.push(`${name} ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  if (code !== 0) {
    failedSteps.push(`${name} (exit ${code})`);
    if (name === 'lint' || name === 'typecheck' || name === 'build') break;
  }
}
console.log(`\nstep times: ${times.join(', ')}`);
if (failedSteps.length) console.log(`\nfailed steps: ${failedSteps.join(', ')}`);
console.log(`tests: ${passed} passed, ${failed} failed`);
process.exit(failedSteps.length ? 1 : 0);
