// `npm test`: lint, type-check, build, unit tests on this host, then the integration tests on a real ublk
// kernel (natively or in the QEMU VM). Ends with one plain line "tests: N passed, N failed" summing every
// tap run; exits non-zero if any step failed.
import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const bin = (name) => path.join(root, 'node_modules', '.bin', name);
const steps = [
  ['lint', bin('eslint'), ['.']],
  ['typecheck', bin('tsc'), ['-p', 'tsconfig.json', '--noEmit']],
  ['build', bin('tsc'), ['-p', 'tsconfig.build.json']],
  ['unit', bin('tap'), ['test/unit']],
  ['integration', process.execPath, [path.join(root, 'scripts', 'integration.mjs')]],
];

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

for (const [name, cmd, args] of steps) {
  const code = await runStep(name, cmd, args);
  if (code !== 0) {
    failedSteps.push(`${name} (exit ${code})`);
    if (name === 'lint' || name === 'typecheck' || name === 'build') break;
  }
}
if (failedSteps.length) console.log(`\nfailed steps: ${failedSteps.join(', ')}`);
console.log(`tests: ${passed} passed, ${failed} failed`);
process.exit(failedSteps.length ? 1 : 0);
