// The controller's own file I/O on containers: zeroing a segment before it is mapped and copying segments
// (copy-on-write, copy-out, alternates, migration). Runs between a staged flow's two transactions, never
// inside one, and never synchronously on the event loop. Every byte count is checked: a short write is
// continued, an error is an error (the flow then gives its reservation back and maps nothing).
import fs from 'node:fs';
import { VdiskError } from '../errors.js';
import * as abi from '../native/abi.js';
import { addon } from '../native/addon.js';
import type { Store } from './store.js';
import { labelProblem, readLabelBlock } from '../label/container-label.js';

const EOPNOTSUPP = 95;

export interface Location { container: number; offset: number }

/** The system calls SegmentIo makes; tests of its error handling substitute misbehaving ones. */
export interface FileOps {
  pread(fd: number, buf: Buffer, offset: number, length: number, position: number): Promise<number>;
  pwrite(fd: number, buf: Buffer, offset: number, length: number, position: number): Promise<number>;
  fdatasync(fd: number): Promise<void>;
  fallocate(fd: number, mode: number, offset: number, length: number): Promise<void>;
}

export const realFileOps: FileOps = {
  pread: (fd, buf, offset, length, position) => new Promise((resolve, reject) =>
    fs.read(fd, buf, offset, length, position, (err, n) => (err ? reject(VdiskError.from(err, 'read container')) : resolve(n)))),
  pwrite: (fd, buf, offset, length, position) => new Promise((resolve, reject) =>
    fs.write(fd, buf, offset, length, position, (err, n) => (err ? reject(VdiskError.from(err, 'write container')) : resolve(n)))),
  fdatasync: (fd) => new Promise((resolve, reject) => fs.fdatasync(fd, (err) => (err ? reject(VdiskError.from(err, 'fdatasync container')) : resolve()))),
  fallocate: (fd, mode, offset, length) => addon().fallocate(fd, mode, offset, length),
};

export class SegmentIo {
  private readonly fds = new Map<number, number>();

  constructor(private readonly store: Store, private readonly ops: FileOps = realFileOps) {}

  /** Copies one segment between containers, durably, before the remap that points at the copy commits. */
  async copy(from: Location, to: Location, length: number): Promise<void> {
    await this.copyRanges(from, to, [[0, length]]);
  }

  /** Copies byte ranges of a segment (offsets within it) between two locations, then one fdatasync. */
  async copyRanges(from: Location, to: Location, ranges: Array<[number, number]>): Promise<void> {
    const dst = await this.fd(to.container);
    await this.copyUnsynced(from, to, ranges, Buffer.allocUnsafe(Math.min(Math.max(...ranges.map((r) => r[1])), 4 << 20)));
    await this.ops.fdatasync(dst);
  }

  /** copy() for many segments of `length` bytes (a batch of faults): one fdatasync per destination container. */
  async copyMany(items: Array<{ from: Location; to: Location }>, length: number): Promise<void> {
    const buf = Buffer.allocUnsafe(Math.min(length, 4 << 20));
    for (const { from, to } of items) await this.copyUnsynced(from, to, [[0, length]], buf);
    await Promise.all([...new Set(items.map((i) => i.to.container))].map(async (c) => this.ops.fdatasync(await this.fd(c))));
  }

  private async copyUnsynced(from: Location, to: Location, ranges: Array<[number, number]>, buf: Buffer): Promise<void> {
    const src = await this.fd(from.container);
    const dst = await this.fd(to.container);
    for (const [offset, length] of ranges) {
      for (let done = 0; done < length;) {
        const n = Math.min(buf.length, length - done);
        await this.readFully(src, buf, n, from.offset + offset + done);
        await this.writeFully(dst, buf, n, to.offset + offset + done);
        done += n;
      }
    }
  }

  /**
   * Makes [offset, offset + length) of the container read as zeros, durably. A punched hole first: it
   * costs nothing where the range is already a hole (ZERO_RANGE on ext4 allocates unwritten extents, so a
   * 1 TiB thick create on a sparse file would claim a terabyte of blocks); then ZERO_RANGE (block devices
   * without unmap-zeroes refuse the hole); without either (EOPNOTSUPP), zeros are written. Any other error
   * fails the zeroing: it is not papered over with writes.
   */
  async zero(containerId: number, offset: number, length: number): Promise<void> {
    const fd = await this.fd(containerId);
    await this.zeroRange(fd, offset, length);
    await this.ops.fdatasync(fd);
  }

  /**
   * zero() for many segments of `length` bytes (a batch of faults): adjacent ones as one range, and one
   * fdatasync per container for the lot.
   */
  async zeroMany(locs: Location[], length: number): Promise<void> {
    const byContainer = new Map<number, number[]>();
    for (const l of locs) byContainer.set(l.container, [...(byContainer.get(l.container) ?? []), l.offset]);
    await Promise.all([...byContainer].map(async ([container, offsets]) => {
      const fd = await this.fd(container);
      offsets.sort((a, b) => a - b);
      for (let i = 0; i < offsets.length;) {
        let j = i + 1;
        while (j < offsets.length && offsets[j] === offsets[j - 1] + length) j++;
        await this.zeroRange(fd, offsets[i], (j - i) * length);
        i = j;
      }
      await this.ops.fdatasync(fd);
    }));
  }

  private async zeroRange(fd: number, offset: number, length: number): Promise<void> {
    const modes = [abi.FALLOC_FL_PUNCH_HOLE | abi.FALLOC_FL_KEEP_SIZE, abi.FALLOC_FL_ZERO_RANGE | abi.FALLOC_FL_KEEP_SIZE];
    let zeroed = false;
    for (const mode of modes) {
      try {
        await this.ops.fallocate(fd, mode, offset, length);
        zeroed = true;
        break;
      } catch (err) {
        if ((err as VdiskError).errno !== -EOPNOTSUPP) throw err;
      }
    }
    if (!zeroed) {
      const zeros = Buffer.alloc(Math.min(length, 1 << 20));
      for (let done = 0; done < length;) {
        const n = Math.min(zeros.length, length - done);
        await this.writeFully(fd, zeros, n, offset + done);
        done += n;
      }
    }
  }

  /** Drops the cached descriptor of a container (removed or failed): ids are never reused, fds are. */
  forget(id: number): void {
    const fd = this.fds.get(id);
    if (fd === undefined) return;
    this.fds.delete(id);
    fs.closeSync(fd);
  }

  /** Container ids with an open descriptor. */
  openContainers(): number[] {
    return [...this.fds.keys()];
  }

  close(): void {
    for (const fd of this.fds.values()) fs.closeSync(fd);
    this.fds.clear();
  }

  /** n bytes at position into buf; bytes past the end of the file read as zeros (a sparse container). */
  private async readFully(fd: number, buf: Buffer, n: number, position: number): Promise<void> {
    for (let got = 0; got < n;) {
      const r = await this.ops.pread(fd, buf, got, n - got, position + got);
      if (r === 0) {
        buf.fill(0, got, n);
        return;
      }
      got += r;
    }
  }

  private async writeFully(fd: number, buf: Buffer, n: number, position: number): Promise<void> {
    for (let put = 0; put < n;) {
      const w = await this.ops.pwrite(fd, buf, put, n - put, position + put);
      if (w <= 0) throw new VdiskError(`write container: wrote nothing at ${position + put} (${n - put} bytes left)`, { code: 'EIO', syscall: 'write' });
      put += w;
    }
  }

  private async fd(id: number): Promise<number> {
    let fd = this.fds.get(id);
    if (fd !== undefined) return fd;
    const c = await this.store.containerById(id);
    if (!c) throw new VdiskError(`container ${id} is gone`, { code: 'ENOENT' });
    if (c.failed) throw new VdiskError(`container ${c.name} has failed`, { code: 'EIO' });
    try {
      fd = fs.openSync(c.path, 'r+');
    } catch (err) {
      throw VdiskError.from(err, `cannot open container ${c.name}`);
    }
    // The controller zeroes and copies only on the storage its label names: a path that names something else
    // now (a moved device) fails the flow, which then maps nothing.
    const problem = c.uuid === null ? null : labelProblem(readLabelBlock(fd), { uuid: c.uuid, size: c.size });
    if (problem) {
      fs.closeSync(fd);
      throw new VdiskError(`container ${c.name}: ${c.path} holds ${problem}, not its label ${c.uuid}`, { code: 'EIO' });
    }
    this.fds.set(id, fd);
    return fd;
  }
}
