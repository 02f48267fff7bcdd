// A real controller in this process with a real agent on its Unix socket and a cli connection (no ublk: tests
// call the agent's disks directly), and one teardown for the three. A test that restarts the controller puts
// the new one in `controller`, which the teardown stops.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Agent, type AgentOptions } from '../../src/agent/agent.js';
import { Controller } from '../../src/controller/controller.js';
import { socketPath } from '../../src/controller/paths.js';
import { connect } from '../../src/protocol/client.js';

export async function controllerWithAgent(t: { teardown: (fn: () => unknown) => void }, prefix: string,
  o: Omit<AgentOptions, 'controller' | 'hostId' | 'leaseMs'> = {}) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  const pair = { dir, controller: await Controller.start(dir) };
  const cli = (await connect(socketPath(dir), { role: 'cli' })).conn;
  const agent = new Agent({ controller: socketPath(dir), hostId: 'h1', leaseMs: 5000, ...o });
  await agent.start();
  t.teardown(async () => {
    await agent.stop();
    await cli.close();
    await pair.controller.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  return Object.assign(pair, { cli, agent });
}
