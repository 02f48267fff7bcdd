// A bare dm-thin pool for the first-write comparisons: metadata and data are loop devices over files in the
// bench's directory (the data file sits on the same file system as vdisk's containers), 1 MiB blocks like
// vdisk's segments, block zeroing on (the pool's default: a partial first write zeroes the rest of the block,
// as vdisk zeroes a new segment). The metadata device starts zeroed, so no thin-provisioning-tools are needed.
import fs from 'node:fs';
import path from 'node:path';
import { MiB, sh } from './exec.js';
import { startKernelLoop, type Served } from './servers.js';

export interface ThinVolume { dev: string; size: number; remove(): Promise<void> }

const SECTOR = 512;
/** dmsetup makes its own /dev/mapper nodes: the VM runs no udev, which dmsetup would otherwise wait for. */
const dmsetup = (args: string[]): string => sh('dmsetup', args, { ...process.env, DM_DISABLE_UDEV: '1' });
const BLOCK_SECTORS = MiB / SECTOR;

/** A fresh thin volume of `size` bytes over a pool of `poolSize` bytes, named `name` (and `name`-pool). */
export async function createThin(dir: string, name: string, size: number, poolSize: number): Promise<ThinVolume> {
  const metaFile = path.join(dir, `${name}-meta.img`);
  const dataFile = path.join(dir, `${name}-data.img`);
  const loops: Served[] = [];
  const created: string[] = [];
  const remove = async () => {
    for (const dm of created.reverse()) dmsetup(['remove', dm]);
    for (const l of loops) await l.stop();
    for (const f of [metaFile, dataFile]) fs.rmSync(f, { force: true });
  };
  try {
    for (const [file, bytes] of [[metaFile, 64 * MiB], [dataFile, poolSize]] as const) {
      fs.writeFileSync(file, '');
      fs.truncateSync(file, bytes); // sparse: reads as zeros, which is an empty metadata device
      loops.push(startKernelLoop(file));
    }
    const [meta, data] = loops as [Served, Served];
    dmsetup(['create', `${name}-pool`, '--table', `0 ${poolSize / SECTOR} thin-pool ${meta.dev} ${data.dev} ${BLOCK_SECTORS} 0`]);
    created.push(`${name}-pool`);
    dmsetup(['message', `/dev/mapper/${name}-pool`, '0', 'create_thin 0']);
    dmsetup(['create', name, '--table', `0 ${size / SECTOR} thin /dev/mapper/${name}-pool 0`]);
    created.push(name);
    return { dev: `/dev/mapper/${name}`, size, remove };
  } catch (err) {
    await remove().catch(() => {});
    throw err;
  }
}
