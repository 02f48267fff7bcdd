// Controller-less "loop" disks: one container, and a table that maps virtual segment i to byte offset
// i * segmentSize of that container, all entries plainly mapped. The data path is the same as for
// controller-managed disks, which makes this the baseline the benchmarks compare against.
import fs from 'node:fs';
import { VdiskError } from '../errors.js';
import { MappingTable, checkSegmentSize } from '../table/mapping-table.js';
import { UblkDevice, type DeviceOptions } from '../ublk/device.js';
import { UBLK_F_USER_RECOVERY, UBLK_F_USER_RECOVERY_REISSUE, UblkControlDevice } from '../ublk/control.js';
import { openContainer, type OpenContainer } from './container.js';

export interface LoopOptions {
  file: string;
  queues: number;
  depth: number;
  segmentSize: number;
  buffered: boolean;
  /** Create the device with user recovery, so a new `vdisk loop --recover` can take it over after a crash. */
  recoverable?: boolean;
  /** Take over this quiesced device instead of creating one. */
  recover?: number;
}

export interface LoopDisk {
  device: UblkDevice;
  container: OpenContainer;
  stop(): Promise<void>;
}

export function loopTable(size: number, segmentSize: number): MappingTable {
  checkSegmentSize(segmentSize);
  const table = MappingTable.create({ segments: Math.ceil(size / segmentSize), segmentSize });
  table.setRange(0, table.segments, { states: 0, container: 0, offset: 0, alt: 0 });
  return table;
}

/** Opens FILE first (so a bad FILE is reported before a missing ublk), then the control device. */
export async function startLoop(o: LoopOptions): Promise<LoopDisk> {
  checkSegmentSize(o.segmentSize); // before anything is opened
  const container = openContainer(o.file, { direct: !o.buffered });
  let control: UblkControlDevice | undefined;
  try {
    if (container.size === 0 || container.size % 512 !== 0) {
      throw new VdiskError(`cannot use ${o.file}: its size (${container.size} bytes) is not a positive multiple of 512`,
        { code: 'EINVAL', path: o.file });
    }
    const fds = new Int32Array(new SharedArrayBuffer(4));
    fds[0] = container.fd;
    const opts: DeviceOptions = {
      queues: o.queues, depth: o.depth, sizeBytes: container.size, table: loopTable(container.size, o.segmentSize),
      containerFds: fds.buffer as SharedArrayBuffer,
    };
    control = UblkControlDevice.open();
    if (o.recoverable) opts.flags = UBLK_F_USER_RECOVERY | UBLK_F_USER_RECOVERY_REISSUE;
    const device = o.recover === undefined ? await UblkDevice.start(control, opts) : await UblkDevice.recover(control, o.recover, opts);
    const ctl = control;
    return {
      device,
      container,
      async stop() {
        try {
          await device.stop();
        } finally {
          ctl.close();
          fs.closeSync(container.fd);
        }
      },
    };
  } catch (err) {
    control?.close();
    fs.closeSync(container.fd);
    throw err;
  }
}
