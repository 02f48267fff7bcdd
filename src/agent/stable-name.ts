// Stable device names: /dev/vdisk/NAME -> /dev/ublkbN while this agent serves the disk (as udev gives
// /dev/mapper/NAME), so scripts and fstab need not know which number the kernel handed out. Kept by the
// agent: made when a device starts or is recovered, removed when it stops, and only if it still points at
// this device (another agent on the same machine may serve a disk of that name meanwhile).
import fs from 'node:fs';
import path from 'node:path';

export const STABLE_DIR = '/dev/vdisk';

export function stableName(disk: string): string {
  return path.join(STABLE_DIR, disk);
}

/** Points /dev/vdisk/DISK at device; a failure is logged, never fatal (the device works without it). */
export function linkStableName(disk: string, device: string, log: (m: string) => void): void {
  const link = stableName(disk);
  try {
    fs.mkdirSync(STABLE_DIR, { recursive: true, mode: 0o755 });
    const tmp = `${link}.${process.pid}.tmp`;
    fs.rmSync(tmp, { force: true });
    fs.symlinkSync(device, tmp);
    fs.renameSync(tmp, link); // atomic: a reader sees the old link or the new one, never none
  } catch (err) {
    log(`cannot link ${link} to ${device}: ${(err as Error).message}`);
  }
}

/** Removes /dev/vdisk/DISK if it still names device. */
export function unlinkStableName(disk: string, device: string): void {
  const link = stableName(disk);
  try {
    if (fs.readlinkSync(link) === device) fs.unlinkSync(link);
  } catch {
    // absent, or not a link of ours
  }
}
