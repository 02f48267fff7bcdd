// `npm run bench`: fio 4k randread/randwrite (QD 32, 1 job, libaio, direct) on `vdisk loop` and on the
// kernel's loop device (losetup --direct-io=on) over the same backing file, in one VM run (or natively on
// a ublk host). Prints a table with the ratios and writes the JSON to bench-results/.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ensureTools } from './ensure-tools.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const outDir = path.join(root, 'bench-results');
fs.mkdirSync(outDir, { recursive: true });
const outFile = path.join(outDir, `bench-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
ensureTools();

const inner = [process.execPath, path.join(root, 'scripts', 'bench-run.mjs'), outFile, ...process.argv.slice(2)];
const native = fs.existsSync('/dev/ublk-control') && process.getuid?.() === 0 && !process.env.VDISK_FORCE_VM;
const cmd = native ? inner : [path.join(root, 'scripts', 'vm', 'run'), '--scratch', '4G', '--smp', '2', '--timeout', '3000',
  '--out', outDir, '--', path.join(root, 'scripts', 'in-vm.sh'), ...inner];
const r = spawnSync(cmd[0], cmd.slice(1), { stdio: 'inherit', cwd: root });
process.exit(r.status ?? 1);
