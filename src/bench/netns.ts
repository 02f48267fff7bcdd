// A multi-host network for the integration tests and the benchmarks, inside the VM (or a root host): namespaces
// ctl, h1 and h2, each with one veth (eth0) on a bridge in a fourth, switch namespace; NBD exports served from
// ctl and attached in a host; a host cut off and restored; a synchronous teardown that removes it all, also on exit.
import { spawn as spawnChild, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export type Host = 'ctl' | 'h1' | 'h2';
export const HOSTS: readonly Host[] = ['ctl', 'h1', 'h2'];
const HOST_OCTET: Record<Host, number> = { ctl: 1, h1: 11, h2: 12 };
/** The first NBD port; each export of a topology takes the next one. */
const NBD_PORT = 10809;

/**
 * How a host is cut off: `drop` loses every packet both ways on its link (netem loss 100% on both ends of its
 * veth), as a real partition does: connects hang in SYN-SENT, established connections retransmit. `down`
 * takes the link down: the host loses its route, so its sends fail at once (ENETUNREACH).
 */
export type CutMode = 'drop' | 'down';

export interface NbdExport {
  file: string;
  /** The export name the server announces (qemu-nbd -x). */
  name: string;
  addr: string;
  port: number;
  /** qemu-nbd's pid (it runs in ctl). */
  pid: number;
}

export interface NsProcess {
  child: ChildProcess;
  pid: number;
  /** What it has written so far, as bytes and as text. */
  output(): Buffer;
  stdout(): string;
  stderr(): string;
  /** Resolves with the exit code (null after a signal). */
  exited: Promise<number | null>;
  finished(): boolean;
}

export interface ExecOptions {
  input?: string | Buffer;
  timeout?: number;
}

/** Blocks this thread: teardown must also work synchronously, from an 'exit' handler. */
function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/**
 * Whether a process still runs. qemu-nbd --fork leaves a daemon whose parent has exited: once it ends, it may
 * stay a zombie until PID 1 (the VM's init shell, busy waiting for the test command) reaps it.
 */
export function running(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    return !/^\d+ \(.*\) Z/.test(fs.readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

function sh(cmd: string, args: string[], opts: ExecOptions = {}): { status: number | null; stdout: Buffer; stderr: string } {
  const r = spawnSync(cmd, args, { input: opts.input, timeout: opts.timeout ?? 600_000, maxBuffer: 256 << 20 });
  if (r.error) throw r.error;
  return { status: r.status, stdout: r.stdout, stderr: r.stderr.toString() };
}

function must(cmd: string, args: string[], opts: ExecOptions = {}): Buffer {
  const r = sh(cmd, args, opts);
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.status}: ${r.stderr}`);
  return r.stdout;
}

/**
 * A command run in namespace `ns`'s network only. Not `ip netns exec`: that also gives the command a mount
 * namespace of its own, a copy of every mount there is at that moment, and a file system another test file
 * mounted meanwhile then stays mounted in that copy after its umount (seen: thin-fault's `mount -o ro` of its
 * device, unmounted a moment before, failed "already mounted" while multi-host's agents ran).
 */
function inNs(ns: string, cmd: string, args: string[]): [string, string[]] {
  return ['nsenter', [`--net=/run/netns/${ns}`, '--', cmd, ...args]];
}

export class Topology {
  /** Namespace names, per host; `<prefix>-sw` holds the bridge. */
  readonly ns: Record<Host, string>;
  /** Each host's address on eth0, all in `subnet`. */
  readonly addr: Record<Host, string>;
  readonly subnet: string;
  private readonly sw: string;
  private readonly dir: string;
  private readonly procs = new Set<NsProcess>();
  private readonly servers: NbdExport[] = [];
  private readonly attached = new Map<string, Host>();
  private readonly cuts = new Map<Host, CutMode>();
  private readonly onExit = () => this.teardown();
  private torn = false;

  /** Takes index `index` (its switch namespace exists already: created by topology() to claim it). */
  constructor(readonly prefix: string, index: number) {
    this.sw = `${prefix}-sw`;
    this.subnet = `10.77.${index}.0/24`;
    this.ns = { ctl: `${prefix}-ctl`, h1: `${prefix}-h1`, h2: `${prefix}-h2` };
    this.addr = { ctl: `10.77.${index}.${HOST_OCTET.ctl}`, h1: `10.77.${index}.${HOST_OCTET.h1}`, h2: `10.77.${index}.${HOST_OCTET.h2}` };
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), `${prefix}-`));
    process.once('exit', this.onExit);
  }

  /**
   * The namespaces and veth pairs (eth0 in the host, a port named after the host in the switch namespace),
   * then the bridge and its ports, then each host's addresses. One `ip -batch` per namespace: under the VM's
   * emulated CPU every process start costs, and this is 5 of them instead of 30.
   */
  build(): void {
    const batch = (ns: string | undefined, lines: string[]) =>
      must('ip', [...(ns ? ['-n', ns] : []), '-batch', '-'], { input: lines.join('\n') + '\n' });
    batch(undefined, HOSTS.flatMap((h) => [`netns add ${this.ns[h]}`,
      `link add ${h} netns ${this.sw} type veth peer name eth0 netns ${this.ns[h]}`]));
    // addrgenmode none: no IPv6 link-local addresses, so no DAD or router solicitations on these links. STP is
    // off on the bridge, so a port forwards as soon as it is up (no forward delay).
    batch(this.sw, ['link set lo up', 'link add br0 type bridge', 'link set br0 addrgenmode none', 'link set br0 up',
      ...HOSTS.flatMap((h) => [`link set ${h} addrgenmode none`, `link set ${h} master br0`, `link set ${h} up`])]);
    for (const h of HOSTS) {
      batch(this.ns[h], ['link set lo up', 'link set eth0 addrgenmode none', `addr add ${this.addr[h]}/24 dev eth0`,
        'link set eth0 up']);
    }
  }

  /** Runs a command in a host's namespace and returns its stdout; throws with its stderr if it fails. */
  exec(host: Host, cmd: string, ...args: string[]): string {
    return this.execWith(host, {}, cmd, ...args).toString();
  }

  execWith(host: Host, opts: ExecOptions, cmd: string, ...args: string[]): Buffer {
    return must(...inNs(this.ns[host], cmd, args), opts);
  }

  /**
   * Starts a command in a host's network namespace (nsenter execs it: the pid is the command's). The process
   * is the topology's: teardown kills it if it is still running. `stdin`: a pipe (child.stdin) instead of nothing.
   */
  spawn(host: Host, cmd: string, args: string[] = [], opts: { stdin?: boolean } = {}): NsProcess {
    const child = spawnChild(...inNs(this.ns[host], cmd, args),
      { stdio: [opts.stdin ? 'pipe' : 'ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    let err = '';
    let done = false;
    child.stdout!.on('data', (d: Buffer) => out.push(d));
    child.stderr!.on('data', (d) => { err += d; });
    const exited = new Promise<number | null>((resolve) => child.once('close', (code) => { done = true; resolve(code); }));
    const output = () => Buffer.concat(out);
    const p: NsProcess = { child, pid: child.pid!, output, stdout: () => output().toString(), stderr: () => err, exited, finished: () => done };
    this.procs.add(p);
    void exited.then(() => this.procs.delete(p));
    return p;
  }

  /**
   * Serves `file` over NBD from ctl, on ctl's address (qemu-nbd, raw, any number of clients, discards
   * punched through). `cache: 'none'` opens the file O_DIRECT; the default goes through ctl's page cache,
   * and an NBD flush is an fdatasync either way. Returns once the server listens (qemu-nbd --fork).
   */
  exportNbd(file: string, opts: { name?: string; cache?: 'none' | 'writeback'; readOnly?: boolean } = {}): NbdExport {
    const port = NBD_PORT + this.servers.length;
    const name = opts.name ?? path.basename(file);
    const pidFile = path.join(this.dir, `nbd-${port}.pid`);
    this.execWith('ctl', {}, 'qemu-nbd', '--fork', `--pid-file=${pidFile}`, '--format=raw', `--export-name=${name}`,
      `--bind=${this.addr.ctl}`, `--port=${port}`, '--persistent', '--shared=0', '--discard=unmap',
      `--cache=${opts.cache ?? 'writeback'}`, ...(opts.readOnly ? ['--read-only'] : []), file);
    const exp: NbdExport = { file, name, addr: this.addr.ctl, port, pid: Number(fs.readFileSync(pidFile, 'utf8').trim()) };
    this.servers.push(exp);
    return exp;
  }

  /**
   * Attaches an export in `host` with the kernel's NBD client (nbd-client over netlink: the kernel holds the
   * TCP socket, which lives in the host's namespace, and nbd-client exits). Takes the first free /dev/nbdN;
   * another test file may take the same one meanwhile, so a failed attempt on a device now in use moves on.
   * `timeout` (s) fails requests that long without an answer; by default they wait for the link to return.
   */
  connectNbd(host: Host, exp: NbdExport, opts: { timeout?: number; blockSize?: number } = {}): string {
    const devs = fs.readdirSync('/sys/block').filter((d) => /^nbd\d+$/.test(d)).sort((a, b) => Number(a.slice(3)) - Number(b.slice(3)));
    if (devs.length === 0) throw new Error('no /dev/nbdN: the nbd module is not loaded');
    const inUse = (d: string) => fs.existsSync(`/sys/block/${d}/pid`);
    for (const d of devs) {
      if (inUse(d)) continue;
      const dev = `/dev/${d}`;
      const r = sh(...inNs(this.ns[host], 'nbd-client', [exp.addr, String(exp.port), dev, '-N', exp.name,
        '-b', String(opts.blockSize ?? 4096), ...(opts.timeout ? ['-t', String(opts.timeout)] : [])]));
      if (r.status === 0) {
        this.attached.set(dev, host);
        return dev;
      }
      if (!inUse(d)) throw new Error(`nbd-client ${exp.addr}:${exp.port} ${exp.name} on ${dev} in ${host} failed: ${r.stderr}`);
    }
    throw new Error(`no free /dev/nbdN (${devs.length} in all)`);
  }

  disconnectNbd(dev: string): void {
    const host = this.attached.get(dev);
    if (!host) throw new Error(`${dev} is not attached by this topology`);
    this.execWith(host, {}, 'nbd-client', '-d', dev);
    this.attached.delete(dev);
  }

  /** Cuts a host off from the others (see CutMode); restore() undoes it. */
  cut(host: Host, mode: CutMode = 'drop'): void {
    if (this.cuts.has(host)) throw new Error(`${host} is cut already (${this.cuts.get(host)})`);
    // Recorded first: a half-done cut is still undone by restore() or teardown.
    this.cuts.set(host, mode);
    if (mode === 'drop') {
      this.execWith(host, {}, 'tc', 'qdisc', 'add', 'dev', 'eth0', 'root', 'netem', 'loss', '100%');
      must(...inNs(this.sw, 'tc', ['qdisc', 'add', 'dev', host, 'root', 'netem', 'loss', '100%']));
    } else {
      must('ip', ['-n', this.ns[host], 'link', 'set', 'eth0', 'down']);
      must('ip', ['-n', this.sw, 'link', 'set', host, 'down']);
    }
  }

  /** Undoes cut(host); a host not cut is left alone. The kernel puts the subnet route back when eth0 comes up. */
  restore(host: Host): void {
    const mode = this.cuts.get(host);
    if (!mode) return;
    if (mode === 'drop') {
      // Either qdisc may be missing after a half-done cut.
      sh(...inNs(this.ns[host], 'tc', ['qdisc', 'del', 'dev', 'eth0', 'root']));
      sh(...inNs(this.sw, 'tc', ['qdisc', 'del', 'dev', host, 'root']));
    } else {
      must('ip', ['-n', this.sw, 'link', 'set', host, 'up']);
      must('ip', ['-n', this.ns[host], 'link', 'set', 'eth0', 'up']);
    }
    this.cuts.delete(host);
  }

  /** Names of this topology's namespaces that exist now. */
  namespaces(): string[] {
    return sh('ip', ['netns', 'list']).stdout.toString().split('\n').map((l) => l.split(' ')[0])
      .filter((n) => n.startsWith(`${this.prefix}-`));
  }

  /**
   * Removes everything, in dependency order: links restored (a disconnect must reach the server), NBD
   * devices disconnected, servers and spawned processes ended, namespaces deleted (taking the veths and
   * the bridge with them). Idempotent; keeps going past failures and throws the first one at the end.
   */
  teardown(): void {
    if (this.torn) return;
    this.torn = true;
    process.removeListener('exit', this.onExit);
    const errors: string[] = [];
    const attempt = (what: string, f: () => void) => {
      try {
        f();
      } catch (e) {
        errors.push(`${what}: ${(e as Error).message}`);
      }
    };
    for (const h of [...this.cuts.keys()]) attempt(`restore ${h}`, () => this.restore(h));
    for (const dev of [...this.attached.keys()]) attempt(`disconnect ${dev}`, () => this.disconnectNbd(dev));
    const pids = [...this.servers.map((s) => s.pid), ...[...this.procs].filter((p) => !p.finished()).map((p) => p.pid)];
    for (const pid of pids) attempt(`kill ${pid}`, () => { if (running(pid)) process.kill(pid, 'SIGTERM'); });
    for (let i = 0; i < 100 && pids.some(running); i++) sleepSync(50);
    for (const pid of pids.filter(running)) attempt(`kill -9 ${pid}`, () => process.kill(pid, 'SIGKILL'));
    // -force: past a namespace that a half-done build never created; what is left is checked after.
    sh('ip', ['-force', '-batch', '-'], { input: [...HOSTS.map((h) => this.ns[h]), this.sw].map((ns) => `netns del ${ns}\n`).join('') });
    const left = this.namespaces();
    if (left.length) errors.push(`namespaces left: ${left.join(' ')}`);
    fs.rmSync(this.dir, { recursive: true, force: true });
    if (errors.length) throw new Error(`topology ${this.prefix} teardown: ${errors.join('; ')}`);
  }
}

/**
 * Builds a topology under the first free index N (namespaces `vdnN-*`, subnet 10.77.N.0/24): creating its
 * switch namespace claims N (ip netns add refuses a name that exists), so test files running side by side
 * in one VM get disjoint ones. A build that fails is torn down before the error is thrown.
 */
export function topology(): Topology {
  for (let i = 0; i < 255; i++) {
    const prefix = `vdn${i}`;
    const r = sh('ip', ['netns', 'add', `${prefix}-sw`]);
    if (r.status !== 0) {
      if (/exists/i.test(r.stderr)) continue;
      throw new Error(`ip netns add ${prefix}-sw: ${r.stderr.trim()}`);
    }
    const t = new Topology(prefix, i);
    try {
      t.build();
    } catch (e) {
      try {
        t.teardown();
      } catch (e2) {
        (e as Error).message += `; and ${(e2 as Error).message}`;
      }
      throw e;
    }
    return t;
  }
  throw new Error('no free topology index (vdn0..vdn254 all exist)');
}
