// Makes sure the system tools the integration tests and benchmarks drive are installed: installs them
// with apt when we are root, otherwise names exactly what to install. Exits non-zero when they are missing.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';

const TOOLS = {
  fio: 'fio', 'mkfs.ext4': 'e2fsprogs', 'fsck.ext4': 'e2fsprogs', blkdiscard: 'util-linux', losetup: 'mount',
  setpriv: 'util-linux', unshare: 'util-linux', dd: 'coreutils', dmsetup: 'dmsetup',
};
/** Only the multi-host topology (src/bench/netns.ts) of the integration tests and the bench: namespaces, veths, netem, NBD. */
export const NET_TOOLS = { ip: 'iproute2', tc: 'iproute2', ss: 'iproute2', nsenter: 'util-linux', 'qemu-nbd': 'qemu-utils', 'nbd-client': 'nbd-client' };

function have(tool) {
  return (process.env.PATH ?? '/usr/bin:/bin').split(':').concat(['/usr/sbin', '/sbin'])
    .some((dir) => fs.existsSync(`${dir}/${tool}`));
}

export function ensureTools(extra = {}) {
  const wanted = { ...TOOLS, ...extra };
  const missing = Object.entries(wanted).filter(([tool]) => !have(tool));
  if (missing.length === 0) return;
  const pkgs = [...new Set(missing.map(([, pkg]) => pkg))];
  if (process.getuid?.() !== 0) {
    console.error(`missing tools: ${missing.map(([t]) => t).join(', ')}; install them with: sudo apt-get install -y ${pkgs.join(' ')}`);
    process.exit(1);
  }
  console.error(`installing ${pkgs.join(' ')} with apt-get`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  spawnSync('apt-get', ['update', '-qq'], { stdio: 'inherit', env });
  const r = spawnSync('apt-get', ['install', '-y', '-qq', ...pkgs], { stdio: 'inherit', env });
  if (r.status !== 0) {
    console.error(`apt-get install ${pkgs.join(' ')} failed`);
    process.exit(1);
  }
}

if (import.meta.url === `file://${process.argv[1]}`) ensureTools();
