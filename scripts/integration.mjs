// Runs the integration tests (test/integration) against a real ublk kernel: natively when this host has
// /dev/ublk-control and we are root, otherwise inside the throwaway QEMU VM of scripts/vm. Never skips: if
// neither can run, it fails and says why. Extra arguments are passed to tap (e.g. a single test file).
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ensureTools } from './ensure-tools.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const files = process.argv.slice(2).length ? process.argv.slice(2)
  : fs.readdirSync(path.join(root, 'test', 'integration')).filter((f) => f.endsWith('.test.ts')).map((f) => `test/integration/${f}`);
const tap = [path.join(root, 'node_modules', '.bin', 'tap'), '--disable-coverage', '--timeout=1800', '--jobs=1', ...files];

ensureTools();
if (!fs.existsSync(path.join(root, 'dist', 'cli', 'main.js')) || !fs.existsSync(path.join(root, 'build', 'Release', 'vdisk.node'))) {
  console.error('integration: build first (npm install builds the addon, npm run build the TypeScript)');
  process.exit(1);
}

const native = fs.existsSync('/dev/ublk-control') && process.getuid?.() === 0 && !process.env.VDISK_FORCE_VM;
const cmd = native
  ? tap
  : [path.join(root, 'scripts', 'vm', 'run'), '--scratch', process.env.VDISK_VM_SCRATCH_SIZE ?? '4G', '--timeout', '4800',
    // 4 vCPUs so that 4-queue devices really get 4 queues (ublk grants one per CPU at most).
    '--smp', '4', '--',
    path.join(root, 'scripts', 'in-vm.sh'), ...tap];
console.error(`integration: running on ${native ? 'this host\'s kernel' : 'the QEMU test VM (Debian 6.12 kernel)'}`);
const r = spawnSync(cmd[0], cmd.slice(1), { stdio: 'inherit', cwd: root });
if (r.error) {
  console.error(`integration: ${r.error.message}`);
  process.exit(1);
}
process.exit(r.status ?? 1);
