// The controller's container I/O: a short write is continued (not taken for done), fallocate falls back
// only when the file system lacks the mode (EOPNOTSUPP), any other error fails the zeroing, and on a real
// file (here, and on tmpfs where ZERO_RANGE is missing) the bytes end up zero.
import t from 'tap';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { VdiskError } from '../../src/errors.js';
import { SegmentIo, realFileOps, type FileOps } from '../../src/controller/segment-io.js';
import { Store } from '../../src/controller/store.js';
import * as abi from '../../src/native/abi.js';

const MB = 1 << 20;

async function setup(t: { teardown: (fn: () => unknown) => void }, base = os.tmpdir()) {
  const dir = fs.mkdtempSync(path.join(base, 'vdisk-segio-'));
  const store = await Store.open(dir);
  t.teardown(async () => { await store.close(); fs.rmSync(dir, { recursive: true, force: true }); });
  const file = path.join(dir, 'c.img');
  fs.writeFileSync(file, Buffer.alloc(4 * MB, 0x5a));
  const c = await store.addContainer('c', file, 4 * MB);
  return { store, file, id: c.id };
}

t.test('a copy whose writes come back short still copies every byte', async (t) => {
  const { store, file, id } = await setup(t);
  fs.writeFileSync(file, Buffer.alloc(MB, 0x11), { flag: 'r+' });
  const ops: FileOps = { ...realFileOps, pwrite: (fd, buf, off, len, pos) => realFileOps.pwrite(fd, buf, off, Math.min(len, 4096 + 512), pos) };
  const io = new SegmentIo(store, ops);
  t.teardown(() => io.close());
  await io.copy({ container: id, offset: 0 }, { container: id, offset: 2 * MB }, MB);
  const got = fs.readFileSync(file).subarray(2 * MB, 3 * MB);
  t.equal(got.filter((b) => b !== 0x11).length, 0, 'the whole segment arrived');
});

t.test('a write that makes no progress is an error, not a loop or a success', async (t) => {
  const { store, id } = await setup(t);
  const io = new SegmentIo(store, { ...realFileOps, pwrite: async () => 0 });
  t.teardown(() => io.close());
  await t.rejects(io.copy({ container: id, offset: 0 }, { container: id, offset: MB }, MB), { code: 'EIO' });
});

t.test('fallocate: EOPNOTSUPP falls back from a punched hole to ZERO_RANGE; any other error fails the zeroing', async (t) => {
  const { store, id } = await setup(t);
  const modes: number[] = [];
  const unsupported = new VdiskError('fallocate: Operation not supported', { code: 'EOPNOTSUPP', errno: -95, syscall: 'fallocate' });
  const io = new SegmentIo(store, { ...realFileOps, fallocate: async (fd, mode, o, l) => {
    modes.push(mode);
    if (mode & abi.FALLOC_FL_PUNCH_HOLE) throw unsupported;
    return realFileOps.fallocate(fd, mode, o, l);
  } });
  t.teardown(() => io.close());
  await io.zero(id, 0, MB);
  t.same(modes, [abi.FALLOC_FL_PUNCH_HOLE | abi.FALLOC_FL_KEEP_SIZE, abi.FALLOC_FL_ZERO_RANGE | abi.FALLOC_FL_KEEP_SIZE]);
  const eio = new SegmentIo(store, { ...realFileOps, fallocate: async () => { throw new VdiskError('fallocate: Input/output error', { code: 'EIO', errno: -5, syscall: 'fallocate' }); },
    pwrite: async () => { t.fail('no zeros are written over an I/O error'); return 0; } });
  t.teardown(() => eio.close());
  await t.rejects(eio.zero(id, MB, MB), { code: 'EIO' });
});

t.test('zeroing a real file, and one on tmpfs, leaves zeros exactly there', async (t) => {
  const bases = [os.tmpdir(), ...(fs.existsSync('/dev/shm') ? ['/dev/shm'] : [])];
  for (const base of bases) {
    const { store, file, id } = await setup(t, base);
    const io = new SegmentIo(store);
    t.teardown(() => io.close());
    await io.zero(id, MB, MB);
    const data = fs.readFileSync(file);
    t.equal(data.subarray(MB, 2 * MB).filter((b) => b !== 0).length, 0, `${base}: the range reads zeros`);
    t.equal(data.subarray(0, MB).filter((b) => b !== 0x5a).length + data.subarray(2 * MB).filter((b) => b !== 0x5a).length, 0, `${base}: nothing else changed`);
  }
});
