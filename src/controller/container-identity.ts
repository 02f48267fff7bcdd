// What a container is, independent of the path that names it: a file by its device and inode (so
// `dir//c.img`, a symlink and a hard link are the same file), a block device by its device number and the
// byte range it covers on its whole disk (so a partition overlaps its disk). One backing store backs at
// most one container: `container add` refuses an overlap and `vdisk check` reports one. Nor may a container
// be one of the controller's own files (its database, socket, logs: paths.ts), by any path or hard link.
import fs from 'node:fs';
import path from 'node:path';
import { isControllerFile } from './paths.js';

export interface Identity {
  /** Stored with the container ("file:DEV:INO" or "block:MAJ:MIN"); unique in the store. */
  key: string;
  /** The whole disk a block device lies on ("block:MAJ:MIN"), or the key for a file. */
  whole: string;
  /** Bytes [start, start + length) of `whole`; a file spans everything of itself. */
  start: number;
  length: number;
}

function majorMinor(rdev: number): string {
  const major = Math.floor(rdev / 256) & 0xfff;
  const minor = (rdev & 0xff) | ((rdev >> 12) & 0xfff00);
  return `${major}:${minor}`;
}

/** The identity of what `p` names now; throws as statSync does when it names nothing. */
export function identify(p: string): Identity {
  const st = fs.statSync(p);
  if (!st.isBlockDevice()) {
    const key = `file:${st.dev}:${st.ino}`;
    return { key, whole: key, start: 0, length: Number.MAX_SAFE_INTEGER };
  }
  const mm = majorMinor(st.rdev);
  const sys = `/sys/dev/block/${mm}`;
  const sectors = (f: string): number => Number(fs.readFileSync(f, 'utf8').trim()) * 512;
  const length = sectors(`${sys}/size`);
  if (!fs.existsSync(`${sys}/partition`)) return { key: `block:${mm}`, whole: `block:${mm}`, start: 0, length };
  // A partition's sysfs directory lies inside its disk's, whose dev file names the disk.
  const parent = path.dirname(fs.realpathSync(sys));
  const wholeMm = fs.readFileSync(`${parent}/dev`, 'utf8').trim();
  return { key: `block:${mm}`, whole: `block:${wholeMm}`, start: sectors(`${sys}/start`), length };
}

/** Whether two identities share any byte of storage. */
export function overlaps(a: Identity, b: Identity): boolean {
  if (a.key === b.key) return true;
  if (a.whole !== b.whole) return false;
  return a.start < b.start + b.length && b.start < a.start + a.length;
}

/** identify(), or undefined when the path names nothing usable now (the caller reports that separately). */
export function tryIdentify(p: string): Identity | undefined {
  try {
    return identify(p);
  } catch {
    return undefined;
  }
}

/** realpath of `p`, which need not exist: its deepest existing ancestor resolved, the rest appended. */
function realpathLoose(p: string): string {
  const abs = path.resolve(p);
  try {
    return fs.realpathSync(abs);
  } catch {
    const parent = path.dirname(abs);
    return parent === abs ? abs : path.join(realpathLoose(parent), path.basename(abs));
  }
}

/**
 * Whether `p` names the controller's data dir or one of its own files in it (paths.ts), and which: by the
 * path once symlinks are resolved (also for a file not made yet: `--size` would create it under the
 * controller's name), or by device and inode (a hard link, anywhere, to a file the controller keeps there).
 * `dir` is the data dir resolved; `file` the name of the controller's file in it, undefined for the dir itself.
 */
export function controllerFileOf(dataDir: string, p: string): { dir: string; file?: string } | undefined {
  const dir = realpathLoose(dataDir);
  const real = realpathLoose(p);
  if (real === dir) return { dir };
  if (path.dirname(real) === dir && isControllerFile(path.basename(real))) return { dir, file: path.basename(real) };
  let st: fs.Stats;
  let names: string[];
  try {
    st = fs.statSync(real);
    names = fs.readdirSync(dir);
  } catch {
    return undefined; // nothing there yet (or no data dir): no file of the controller's to be
  }
  for (const name of names) {
    if (!isControllerFile(name)) continue;
    const theirs = tryLstat(path.join(dir, name)); // a symlink there is not the controller's file
    if (theirs && theirs.dev === st.dev && theirs.ino === st.ino) return { dir, file: name };
  }
  return undefined;
}

/** What controllerFileOf found, for messages. */
export function describeControllerFile(found: { dir: string; file?: string }): string {
  return found.file === undefined ? `the controller's data directory ${found.dir}` : `the controller's own ${found.file} in its data directory ${found.dir}`;
}

function tryLstat(p: string): fs.Stats | undefined {
  try {
    return fs.lstatSync(p);
  } catch {
    return undefined;
  }
}
