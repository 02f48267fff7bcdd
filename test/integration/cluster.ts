// A controller with its agents for the integration tests, driven through the vdisk CLI run in-process
// (test/support/cli.ts; the daemons are real processes): a data dir and container files on the scratch
// disk, and a teardown that detaches every disk, stops the agents and the controller, and checks that the
// devices this cluster attached are gone (other test files may have their own devices meanwhile).
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { UblkControlDevice } from '../../src/ublk/control.js';
import { runCli, type CliResult } from '../support/cli.js';
import { CLI, WORK, alive, waitFor } from './helpers.js';

export type Result = CliResult;

/**
 * Whether a device of this cluster is still there once its daemons are gone. The number may already serve
 * another file's disk (freed by the detach, taken by the next ADD_DEV): a live server is someone else's,
 * since every daemon of this cluster has exited; no server or a dead one is what this cluster left.
 */
async function leftBehind(device: string): Promise<boolean> {
  if (!fs.existsSync(device)) return false;
  const control = UblkControlDevice.open();
  try {
    const info = await control.getDevInfo(Number(device.replace('/dev/ublkb', '')));
    return !(info.ublksrvPid > 0 && alive(info.ublksrvPid));
  } catch (err) {
    if (!fs.existsSync(device)) return false; // deleted since the look above
    throw err;
  } finally {
    control.close();
  }
}

export class Cluster {
  readonly dir: string;
  /** For the few commands run as a real process (exit codes, signals): the data dir and nothing of tap's. */
  readonly env: NodeJS.ProcessEnv;
  /**
   * The devices this cluster's attaches printed and no detach of it has taken back, by "disk@host". A detached
   * device's number is free for another file running meanwhile: only these can be "left behind" at stop().
   */
  readonly devices = new Map<string, string>();

  /** `parent`: where the data dir goes (a test's own file system); the scratch dir by default. */
  constructor(name: string, parent = WORK) {
    fs.mkdirSync(parent, { recursive: true });
    this.dir = fs.mkdtempSync(path.join(parent, `${name}-`));
    this.env = { ...process.env, VDISK_DATA_DIR: this.dir };
  }

  static async start(name: string, parent?: string): Promise<Cluster> {
    const c = new Cluster(name, parent);
    await c.ok('controller', 'start');
    return c;
  }

  /** `vdisk ARGS --data-dir DIR`, in this process. */
  async vdisk(...args: string[]): Promise<Result> {
    const r = await runCli(args, this.dir);
    if (args[0] === 'detach' && r.status === 0) {
      const h = args.indexOf('--host-id');
      const host = h > 0 ? args[h + 1] : undefined;
      for (const key of [...this.devices.keys()]) {
        const [disk, on] = key.split('@');
        if (disk === args[1] && (host === undefined || on === host)) this.devices.delete(key);
      }
    }
    return r;
  }

  /** The same as a separate `vdisk` process: for what only a process shows (exit on a lost controller). */
  spawnVdisk(args: string[]): { proc: ReturnType<typeof spawn>; done: Promise<Result> } {
    const proc = spawn(process.execPath, [CLI, ...args], { env: this.env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    proc.stdout!.on('data', (d) => { out += d; });
    proc.stderr!.on('data', (d) => { err += d; });
    const done = new Promise<Result>((resolve) => proc.once('close', (status) => resolve({ status: status ?? -1, out, err: err.trim() })));
    return { proc, done };
  }

  async ok(...args: string[]): Promise<string> {
    const r = await this.vdisk(...args);
    if (r.status !== 0) throw new Error(`vdisk ${args.join(' ')} exited ${r.status}: ${r.err}${r.out}\n--- controller log:\n${this.log('controller.log')}`);
    return r.out;
  }

  async json<T>(...args: string[]): Promise<T> {
    return JSON.parse(await this.ok(...args, '--json')) as T;
  }

  /** A container file of `size` bytes (sparse) added as `name`. */
  async container(name: string, size: string): Promise<string> {
    const file = path.join(this.dir, `${name}.img`);
    await this.ok('container', 'add', name, '--path', file, '--size', size);
    return file;
  }

  async attach(disk: string, hostId = 'h1', ...extra: string[]): Promise<string> {
    const device = (await this.json<{ device: string }>('attach', disk, '--host-id', hostId, ...extra)).device;
    this.devices.set(`${disk}@${hostId}`, device);
    return device;
  }

  async agentPid(hostId = 'h1'): Promise<number> {
    const a = (await this.json<Array<{ hostId: string; pid: number }>>('agent', 'ls')).find((x) => x.hostId === hostId);
    if (!a) throw new Error(`no agent ${hostId} is connected`);
    return a.pid;
  }

  async controllerPid(): Promise<number> {
    return (await this.json<{ pid: number }>('controller', 'status')).pid;
  }

  /** `vdisk check`'s exit status, the expected 0 and its output: the arguments of t.equal. */
  async check(): Promise<[number, number, string]> {
    const r = await this.vdisk('check');
    return [r.status, 0, `vdisk check: ${r.out.trim()} ${r.err}`];
  }

  log(file: string): string {
    try {
      return fs.readFileSync(path.join(this.dir, file), 'utf8').split('\n').slice(-30).join('\n');
    } catch {
      return '(none)';
    }
  }

  /** Waits for a condition that other processes bring about (polled; the condition is the proof). */
  until(what: string, cond: () => boolean | Promise<boolean>, timeoutMs = 120_000): Promise<void> {
    return waitFor(what, cond, timeoutMs);
  }

  /**
   * Until the controller counts at least `bytes` allocated to `disk`. First writes into granted segments reach
   * it with the agent's next message (about 50 ms later, nobody waiting on it), not with the write itself.
   */
  allocated(disk: string, bytes: number): Promise<void> {
    return this.until(`${disk}'s claims to reach the controller`, async () => (await this.json<{ allocatedBytes: number }>('info', disk)).allocatedBytes >= bytes);
  }

  /**
   * Detaches everything, stops agents and controller; throws if a device of this cluster is left or a daemon
   * does not exit (which it then kills, so the next file starts clean). The error carries the steps that
   * failed on the way and the daemons' last log lines: in CI it is often the only trace of a race.
   */
  async stop(): Promise<void> {
    const mine = [...this.devices.values()]; // before the detaches below take them out of this.devices
    const status = await this.vdisk('controller', 'status');
    const problems: string[] = [];
    // Failed steps are no failure by themselves (a test may leave an agent unreachable): context for one.
    const trace: string[] = [];
    const note = (what: string, r: { status: number | null; out: string; err: string }) => {
      if (r.status !== 0) trace.push(`${what}: exit ${r.status}: ${(r.err || r.out).trim()}`);
    };
    if (status.status === 0) {
      const pids = [(JSON.parse((await this.vdisk('controller', 'status', '--json')).out) as { pid: number }).pid];
      const agents = await this.json<Array<{ hostId: string; pid: number; disks: string[] }>>('agent', 'ls');
      for (const a of agents) for (const d of a.disks) note(`detach ${d}`, await this.vdisk('detach', d, '--host-id', a.hostId));
      for (const a of agents) {
        note(`agent stop ${a.hostId}`, await this.vdisk('agent', 'stop', '--host-id', a.hostId));
        pids.push(a.pid);
      }
      note('controller stop', await this.vdisk('controller', 'stop'));
      // The harness fails a file that leaves a process behind: wait for each daemon to be gone.
      for (const pid of pids) {
        try {
          await this.until(`pid ${pid} to exit`, () => !alive(pid), 30_000);
        } catch (err) {
          problems.push((err as Error).message);
          try {
            process.kill(pid, 'SIGKILL');
          } catch { /* gone meanwhile */ }
        }
      }
    }
    const left: string[] = [];
    for (const d of mine) if (await leftBehind(d)) left.push(d);
    if (left.length) problems.push(`ublk devices left behind: ${left.join(', ')}`);
    const logs = problems.length ? fs.readdirSync(this.dir).filter((f) => f.endsWith('.log')).map((f) => `--- ${f}:\n${this.log(f)}`) : [];
    fs.rmSync(this.dir, { recursive: true, force: true });
    if (problems.length) throw new Error(`${problems.join('; ')}\n${[...trace, ...logs].join('\n')}`);
  }
}
