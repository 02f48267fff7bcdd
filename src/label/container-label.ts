// The on-media label of a container (like an LVM physical-volume label): the first 4 KiB of its storage say
// which container it is (UUID) and how big the controller recorded it, so an agent can tell the right
// storage from a wrong path before it serves a byte. Allocation starts after LABEL_RESERVED_BYTES.
// Shared by the controller (writes it at `container add`, wipes it at `container rm`) and the agents (check it).
import fs from 'node:fs';
import { randomUUID } from 'node:crypto';
import zlib from 'node:zlib';
import { addon } from '../native/addon.js';
import { VdiskError } from '../errors.js';

/** The label block at byte 0 (one 4 KiB block: any logical block size divides it). */
export const LABEL_BYTES = 4096;
/**
 * Bytes at the start of a labelled container that no segment uses: 1 MiB, the default segment size, so a
 * container of default segments loses nothing to alignment (segments are aligned to their size) and the first
 * segment starts on a boundary every block device's physical block and optimal I/O size divides.
 */
export const LABEL_RESERVED_BYTES = 1 << 20;
const MAGIC = Buffer.from('VDISKLBL', 'latin1');
const VERSION = 1;
const NAME_BYTES = 64;
/** Bytes the checksum covers; the CRC-32 follows them. */
const BODY = 48 + NAME_BYTES;

export interface Label { uuid: string; size: number; name: string }

export function newUuid(): string {
  return randomUUID();
}

/**
 * Layout, little-endian: magic "VDISKLBL", u32 version, u32 label bytes (4096), 16 bytes UUID, u64 size,
 * u64 data start (1 MiB), 64 bytes name (UTF-8, zero padded, informative), u32 CRC-32 of all before it.
 */
export function encodeLabel(l: Label): Buffer {
  const b = Buffer.alloc(LABEL_BYTES);
  MAGIC.copy(b, 0);
  b.writeUInt32LE(VERSION, 8);
  b.writeUInt32LE(LABEL_BYTES, 12);
  uuidBytes(l.uuid).copy(b, 16);
  b.writeBigUInt64LE(BigInt(l.size), 32);
  b.writeBigUInt64LE(BigInt(LABEL_RESERVED_BYTES), 40);
  const name = Buffer.from(l.name, 'utf8');
  name.copy(b, 48, 0, Math.min(name.length, NAME_BYTES));
  b.writeUInt32LE(zlib.crc32(b.subarray(0, BODY)), BODY);
  return b;
}

/** The label in `b`, or why there is none: the caller names the storage in its message. */
export function decodeLabel(b: Buffer): Label | { problem: string } {
  if (b.length < LABEL_BYTES || !b.subarray(0, MAGIC.length).equals(MAGIC)) return { problem: 'no vdisk label' };
  if (b.readUInt32LE(BODY) !== zlib.crc32(b.subarray(0, BODY))) return { problem: 'a damaged vdisk label (bad checksum)' };
  const version = b.readUInt32LE(8);
  if (version !== VERSION) return { problem: `a vdisk label of version ${version}, which this vdisk does not know` };
  const name = b.subarray(48, 48 + NAME_BYTES);
  const end = name.indexOf(0);
  return {
    uuid: uuidText(b.subarray(16, 32)), size: Number(b.readBigUInt64LE(32)),
    name: name.subarray(0, end < 0 ? NAME_BYTES : end).toString('utf8'),
  };
}

/** Why the label in `b` is not the expected container's (null when it is). */
export function labelProblem(b: Buffer, expected: { uuid: string; size: number }): string | null {
  const l = decodeLabel(b);
  if ('problem' in l) return l.problem;
  if (l.uuid !== expected.uuid) return `the label of another container (${l.name || '?'}, ${l.uuid})`;
  if (l.size !== expected.size) return `the right label but size ${l.size}, not ${expected.size}`;
  return null;
}

/**
 * The first LABEL_BYTES of an open file (zeros past its end). `direct`: fd was opened O_DIRECT, and the read
 * bypasses the page cache, which may hold what was on shared storage before another host overwrote it.
 */
export function readLabelBlock(fd: number, direct = false): Buffer {
  if (direct) return addon().preadDirect(fd, LABEL_BYTES, 0);
  const b = Buffer.alloc(LABEL_BYTES);
  for (let got = 0; got < LABEL_BYTES;) {
    const n = fs.readSync(fd, b, got, LABEL_BYTES - got, got);
    if (n === 0) break;
    got += n;
  }
  return b;
}

/** The label block of what `p` names, read on a descriptor of its own (no O_DIRECT: no buffer alignment). */
export async function readLabelAt(p: string): Promise<Buffer> {
  const h = await fs.promises.open(p, 'r');
  try {
    const b = Buffer.alloc(LABEL_BYTES);
    const { bytesRead } = await h.read(b, 0, LABEL_BYTES, 0);
    b.fill(0, bytesRead);
    return b;
  } finally {
    await h.close();
  }
}

/** Writes `block` at byte 0 and fdatasyncs: the label (or its wipe) is durable before anyone relies on it. */
export async function writeLabelAt(p: string, block: Buffer): Promise<void> {
  let h: fs.promises.FileHandle;
  try {
    h = await fs.promises.open(p, 'r+');
  } catch (err) {
    throw VdiskError.from(err, `cannot write the label of ${p}`);
  }
  try {
    for (let put = 0; put < block.length;) {
      const { bytesWritten } = await h.write(block, put, block.length - put, put);
      if (bytesWritten <= 0) throw new VdiskError(`cannot write the label of ${p}: wrote nothing`, { code: 'EIO', syscall: 'write' });
      put += bytesWritten;
    }
    await h.datasync();
  } catch (err) {
    throw err instanceof VdiskError ? err : VdiskError.from(err, `cannot write the label of ${p}`);
  } finally {
    await h.close();
  }
}

function uuidBytes(uuid: string): Buffer {
  const hex = uuid.replace(/-/g, '');
  if (!/^[0-9a-f]{32}$/i.test(hex)) throw new VdiskError(`bad container UUID ${uuid}`, { code: 'EINVAL' });
  return Buffer.from(hex, 'hex');
}

function uuidText(b: Buffer): string {
  const h = b.toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}
