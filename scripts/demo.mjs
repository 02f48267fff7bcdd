// `npm run demo`: runs scripts/demo.sh where ublk exists: natively as root on a ublk host, otherwise in
// the QEMU VM of scripts/vm (which installs what it needs with apt when root).
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ensureTools } from './ensure-tools.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
ensureTools();
const demo = path.join(root, 'scripts', 'demo.sh');
const native = fs.existsSync('/dev/ublk-control') && process.getuid?.() === 0 && !process.env.VDISK_FORCE_VM;
if (!native) console.error('demo: this kernel has no ublk; running the demo in the QEMU test VM (Debian 6.12 kernel)');
const cmd = native ? [demo] : [path.join(root, 'scripts', 'vm', 'run'), '--scratch', '1G', '--', path.join(root, 'scripts', 'in-vm.sh'), demo];
const r = spawnSync(cmd[0], cmd.slice(1), { stdio: 'inherit', cwd: root });
process.exit(r.status ?? 1);
