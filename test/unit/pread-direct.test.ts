// The addon's aligned O_DIRECT read, which the agent uses for container labels (a block device's page cache
// may be stale against shared storage): the bytes on the file, zeros past its end, and EINVAL for what
// O_DIRECT cannot do. Runs where the test directory's file system takes O_DIRECT; says so where it does not.
import t from 'tap';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { addon } from '../../src/native/addon.js';
import { readLabelBlock } from '../../src/label/container-label.js';
import { openContainer } from '../../src/loop/container.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vdisk-pread-'));
t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
const file = path.join(dir, 'c.img');
const data = crypto.randomBytes(3 * 4096 + 100);
fs.writeFileSync(file, data);
const c = openContainer(file, { direct: true, readOnly: true });
if (!c.direct) t.comment(`${dir}: this file system refuses O_DIRECT; preadDirect reads through the page cache here`);
t.teardown(() => fs.closeSync(c.fd));

t.test('reads the bytes at an aligned offset, zeros past the end', async (t) => {
  t.ok(addon().preadDirect(c.fd, 8192, 0).equals(data.subarray(0, 8192)), 'the first 8 KiB');
  const tail = addon().preadDirect(c.fd, 4096, 3 * 4096);
  t.ok(tail.subarray(0, 100).equals(data.subarray(3 * 4096)), 'the last 100 bytes');
  t.ok(tail.subarray(100).equals(Buffer.alloc(4096 - 100)), 'then zeros');
  t.ok(readLabelBlock(c.fd, c.direct).equals(data.subarray(0, 4096)), 'readLabelBlock takes the same bytes either way');
});

t.test('unaligned lengths or offsets are EINVAL, a closed descriptor EBADF', async (t) => {
  t.throws(() => addon().preadDirect(c.fd, 100, 0), { code: 'EINVAL', syscall: 'pread' });
  t.throws(() => addon().preadDirect(c.fd, 4096, 512), { code: 'EINVAL' });
  const fd = fs.openSync(file, 'r');
  fs.closeSync(fd);
  t.throws(() => addon().preadDirect(fd, 4096, 0), { code: 'EBADF', syscall: 'pread' });
});
