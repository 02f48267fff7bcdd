// A controller with its agents for the integration tests, driven only through the vdisk CLI: a data dir and
// container files on the scratch disk, and a teardown that detaches every disk, stops the agents and the
// controller, and checks that no /dev/ublk device is left behind.
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { CLI, WORK, ublkNodes } from './helpers.js';

export interface Result { status: number | null; out: string; err: string }

export class Cluster {
  readonly dir: string;
  readonly env: NodeJS.ProcessEnv;
  private readonly files: string[] = [];

  constructor(name: string) {
    fs.mkdirSync(WORK, { recursive: true });
    this.dir = fs.mkdtempSync(path.join(WORK, `${name}-`));
    // The daemons outlive this test's process tree: keep tap's NODE_OPTIONS hooks out of them.
    this.env = { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin', HOME: os.homedir(), VDISK_DATA_DIR: this.dir };
    if (process.env.VDISK_DEBUG) this.env.VDISK_DEBUG = process.env.VDISK_DEBUG;
  }

  static start(name: string): Cluster {
    const c = new Cluster(name);
    c.ok('controller', 'start');
    return c;
  }

  vdisk(...args: string[]): Result {
    const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', env: this.env, timeout: 180_000 });
    return { status: r.status, out: r.stdout, err: r.stderr.trim() };
  }

  /** Runs the CLI without blocking the event loop (for commands that wait on other work of this test). */
  vdiskAsync(...args: string[]): Promise<Result> {
    return new Promise((resolve) => {
      const p = spawn(process.execPath, [CLI, ...args], { env: this.env });
      let out = '';
      let err = '';
      p.stdout.on('data', (d) => { out += d; });
      p.stderr.on('data', (d) => { err += d; });
      p.once('close', (status) => resolve({ status, out, err: err.trim() }));
    });
  }

  ok(...args: string[]): string {
    const r = this.vdisk(...args);
    if (r.status !== 0) throw new Error(`vdisk ${args.join(' ')} exited ${r.status}: ${r.err}\n--- controller log:\n${this.log('controller.log')}`);
    return r.out;
  }

  json<T>(...args: string[]): T {
    return JSON.parse(this.ok(...args, '--json')) as T;
  }

  /** A container file of `size` bytes (sparse) added as `name`. */
  container(name: string, size: string): string {
    const file = path.join(this.dir, `${name}.img`);
    this.files.push(file);
    this.ok('container', 'add', name, '--path', file, '--size', size);
    return file;
  }

  attach(disk: string, hostId = 'h1', ...extra: string[]): string {
    return this.json<{ device: string }>('attach', disk, '--host-id', hostId, ...extra).device;
  }

  agentPid(hostId = 'h1'): number {
    const a = this.json<Array<{ hostId: string; pid: number }>>('agent', 'ls').find((x) => x.hostId === hostId);
    if (!a) throw new Error(`no agent ${hostId} is connected`);
    return a.pid;
  }

  controllerPid(): number {
    return this.json<{ pid: number }>('controller', 'status').pid;
  }

  log(file: string): string {
    try {
      return fs.readFileSync(path.join(this.dir, file), 'utf8').split('\n').slice(-30).join('\n');
    } catch {
      return '(none)';
    }
  }

  /** Waits for a condition that other processes bring about. */
  async until(what: string, cond: () => boolean, timeoutMs = 60_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!cond()) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /** Detaches everything, stops agents and controller; throws if a ublk device is left. */
  async stop(): Promise<void> {
    if (this.vdisk('controller', 'status').status === 0) {
      const agents = this.json<Array<{ hostId: string; pid: number; disks: string[] }>>('agent', 'ls');
      for (const a of agents) for (const d of a.disks) this.vdisk('detach', d, '--host-id', a.hostId);
      for (const a of agents) {
        try {
          process.kill(a.pid, 'SIGTERM');
        } catch {
          // already gone
        }
      }
      this.vdisk('controller', 'stop');
    }
    const left = ublkNodes();
    fs.rmSync(this.dir, { recursive: true, force: true });
    if (left.length) throw new Error(`ublk devices left behind: ${left.join(', ')}`);
  }
}
