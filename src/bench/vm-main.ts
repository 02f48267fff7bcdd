// The benchmark body where ublk exists (inside the VM for `npm run bench`, or natively on a ublk host):
// vdisk loop against the kernel loop device (and ublksrv) on a tmpfs file and on a file on ext4 over the
// virtio scratch disk, then the controller and snapshot parts, which reuse the ext4 file, and one disk on two
// hosts (network namespaces, h2 through NBD). Writes OUT.json.
// Usage: node dist/bench/vm-main.js OUT.json [options of main.ts]
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { VdiskError } from '../errors.js';
import { fsType, sh } from './exec.js';
import { loopCompare, loopRows, type LoopCompare } from './loop-compare.js';
import { DEPTH, QUEUES } from './host-controller.js';
import { parseBenchArgs } from './options.js';
import { printRows, whereAmI, writeReport, type Report, type Row } from './report.js';
import { vmControllerBench, vmControllerRows, type VmController } from './vm-controller.js';
import { vmHostsBench, vmHostsRows, type VmHosts } from './vm-hosts.js';
import { vmSnapshotBench, vmSnapshotRows, type VmSnapshot } from './vm-snapshot.js';

export async function vmMain(argv: string[]): Promise<number> {
  const { opts, positionals } = parseBenchArgs(argv);
  const outFile = positionals[0];
  if (!outFile) throw new VdiskError('usage: vm-main.js OUT.json [options]', { code: 'EINVAL' });
  const log = (m: string) => console.error(`bench: ${m}`);
  const where = whereAmI();
  const dir = process.env.VDISK_TEST_DIR ?? os.tmpdir();
  const file = path.join(dir, 'bench-backing.img');
  const tmpfsFile = path.join('/dev/shm', 'bench-backing.img');
  const rows: Row[] = [];
  const report: Report = {
    date: new Date().toISOString(), kernel: os.release(), cpus: os.cpus().length, where, dir, dirFsType: fsType(dir),
    fio: { bs: '4k', iodepth: 32, numjobs: 1, ioengine: 'libaio', direct: 1, runtime: opts.runtime, rounds: opts.rounds },
    options: opts, rows,
  };
  const errors: string[] = [];
  const part = async <T>(name: string, fn: () => Promise<T>): Promise<T | undefined> => {
    try {
      return await fn();
    } catch (err) {
      errors.push(`${name}: ${(err as Error).message}`);
      log(`the ${name} part failed: ${(err as Error).stack ?? String(err)}`);
      return undefined;
    }
  };
  log(`writing a ${opts.fileMiB} MiB backing file in ${dir} (${report.dirFsType})`);
  sh('dd', ['if=/dev/urandom', `of=${file}`, 'bs=1M', `count=${opts.fileMiB}`, 'oflag=direct', 'status=none']);
  try {
    if (opts.loop) {
      const loops: LoopCompare[] = [];
      report.loop = loops;
      if (fsType('/dev/shm') === 'tmpfs') {
        fs.copyFileSync(file, tmpfsFile);
        const c = await part('tmpfs loop', () => loopCompare({ setup: 'file on tmpfs', file: tmpfsFile, queues: QUEUES, depth: DEPTH, runtime: opts.runtime, rounds: opts.rounds, log }));
        fs.rmSync(tmpfsFile, { force: true });
        if (c) { loops.push(c); rows.push(...loopRows(c, where)); }
      } else {
        errors.push('tmpfs loop: /dev/shm is not tmpfs here');
      }
      const c = await part('ext4 loop', () => loopCompare({ setup: `file on ${report.dirFsType} (${dir})`, file, queues: QUEUES, depth: DEPTH, runtime: opts.runtime, rounds: opts.rounds, log }));
      if (c) { loops.push(c); rows.push(...loopRows(c, where)); }
    }
    if (opts.controller) {
      const c: VmController | undefined = await part('controller', () => vmControllerBench({ dir, file, runtime: opts.runtime, rounds: opts.rounds, faults: opts.faults, log }));
      report.controller = c ?? { error: errors.at(-1) };
      if (c) rows.push(...vmControllerRows(c, where));
    }
    if (opts.snapshot) {
      const s: VmSnapshot | undefined = await part('snapshot', () => vmSnapshotBench({ dir, file, runtime: opts.runtime, rounds: opts.rounds, cows: opts.cows, log }));
      report.snapshot = s ?? { error: errors.at(-1) };
      if (s) rows.push(...vmSnapshotRows(s, where));
    }
    if (opts.hosts) {
      const h: VmHosts | undefined = await part('hosts', () => vmHostsBench({ dir, sizeMiB: opts.fileMiB, runtime: opts.runtime, rounds: opts.rounds, log }));
      report.hosts = h ?? { error: errors.at(-1) };
      if (h) rows.push(...vmHostsRows(h, where));
    }
  } finally {
    fs.rmSync(file, { force: true });
    fs.rmSync(tmpfsFile, { force: true });
  }
  if (errors.length > 0) report.errors = errors;
  writeReport(outFile, report);
  printRows(rows);
  return errors.length > 0 ? 1 : 0;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  process.exitCode = await vmMain(process.argv.slice(2));
}
