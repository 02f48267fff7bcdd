// A real controller in this process with scripted peers playing the agents over the real protocol (the real
// agent is tested in the VM): each peer answers table and device commands and records what it was sent;
// `events` keeps the order in which peers received commands and answers, across all of them.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Controller, type ControllerOptions } from '../../src/controller/controller.js';
import { socketPath } from '../../src/controller/paths.js';
import { VdiskError } from '../../src/errors.js';
import { connect, type Endpoint } from '../../src/protocol/client.js';
import type { Connection } from '../../src/protocol/connection.js';
import type { Claim } from '../../src/protocol/agent-ops.js';
import { ENTRY_BYTES, decodeEntry } from '../../src/table/entry-codec.js';
import type { Entry } from '../../src/table/mapping-table.js';

export interface Received { op: string; args: Record<string, unknown>; payload: Buffer | undefined }
export interface Peer {
  conn: Connection; got: Received[]; ops(): string[]; /** From now on: no pings, no answers (a partition). */ silence(): void; lastContact(): number;
  /** The claims the next grants.revoke and device.stop answer with (each takes them). */
  claims: { revoke: Claim[]; stop: Claim[] };
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
export const entriesOf = (p: Buffer | undefined): Entry[] => Array.from({ length: (p?.length ?? 0) / ENTRY_BYTES }, (_, k) => decodeEntry(p!, k));

export async function scriptedController(t: { teardown: (fn: () => unknown) => void }, prefix: string, o: ControllerOptions = {}) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  const sock = socketPath(dir);
  const controller = await Controller.start(dir, o);
  const cli = (await connect(sock, { role: 'cli' })).conn;
  const peers: Connection[] = [cli];
  const events: string[] = [];
  t.teardown(async () => {
    await Promise.all(peers.map((c) => c.close()));
    await controller.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  /**
   * A scripted agent: registers, answers the table/device commands, records everything it is sent. It
   * speaks on the Unix socket, or on `endpoint` (the TLS listener, with a host credential).
   */
  async function scriptedAgent(hostId: string, devId: number, endpoint: Endpoint = sock, o: { leaseMs?: number; hang?: string[]; disks?: unknown[]; fail?: Record<string, string> } = {}): Promise<Peer> {
    const { conn } = await connect(endpoint, { role: 'agent', hostId });
    peers.push(conn);
    const got: Received[] = [];
    const leaseMs = o.leaseMs ?? 5000;
    // Pings at the real agent's rate (a quarter lease) until silenced: the controller drops a silent agent.
    let silent = false;
    // As the real agent counts its lease: from the send time of the last register or ping that was answered.
    let lastContact = Date.now();
    const pinger = setInterval(() => {
      if (silent) return;
      const sent = Date.now();
      void conn.request('agent.ping', {}).then(() => { if (!silent) lastContact = Math.max(lastContact, sent); }, () => {});
    }, Math.floor(leaseMs / 4));
    pinger.unref();
    void conn.closed.then(() => clearInterval(pinger));
    const claims = { revoke: [] as Claim[], stop: [] as Claim[] };
    conn.onRequest(async (op, args, payload) => {
      // A partitioned agent: nothing it would answer reaches the controller.
      if (silent) return new Promise(() => {});
      got.push({ op, args, payload });
      events.push(`${hostId}:${op}`);
      if (o.hang?.includes(op)) return new Promise(() => {}); // a request its agent never gets to answer
      if (o.fail?.[op]) throw new VdiskError(`${op} failed as scripted`, { code: o.fail[op] });
      switch (op) {
        case 'containers.set': case 'table.create': case 'table.set': case 'table.states': case 'table.alt':
        case 'table.delete':
          return {};
        case 'device.stop': return { claims: claims.stop.splice(0) };
        case 'grants.revoke': return { claims: claims.revoke.splice(0) };
        case 'device.start': case 'device.recover': return { devId, path: `/dev/ublkb${devId}`, queues: 1 };
        default: throw new VdiskError(`unknown operation ${op}`, { code: 'EUNKNOWNOP' });
      }
    });
    await conn.request('agent.register', { pid: process.pid, leaseMs, disks: o.disks ?? [] });
    // Let the registration's reconciliation (containers.set, then a look at the host's attachments) finish
    // before the test attaches, so its commands are only those of the attach.
    for (let i = 0; i < 250 && !got.some((g) => g.op === 'containers.set'); i++) await sleep(20);
    await sleep(50);
    return { conn, got, ops: () => got.map((r) => r.op).filter((op) => op !== 'containers.set'), silence: () => { silent = true; }, lastContact: () => lastContact, claims };
  }

  const ask = async <T>(op: string, args: Record<string, unknown> = {}): Promise<T> => (await cli.request(op, args)).result as T;
  return { dir, controller, cli, events, scriptedAgent, ask };
}
