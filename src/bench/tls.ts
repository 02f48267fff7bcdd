// The bench's agents over the controller's mutual-TLS listener, on loopback only: the controller started with
// `--listen 127.0.0.1:0` (its port read back from `controller status`), host credentials issued by the real
// `vdisk host add --out FILE` and read with the agent's own readCredential, connections by the real client.
import path from 'node:path';
import { VdiskError } from '../errors.js';
import { connect, type TlsEndpoint } from '../protocol/client.js';
import type { Connection } from '../protocol/connection.js';
import { readCredential } from '../protocol/credential.js';
import { runCli } from './session.js';

/** `controller start` arguments for a TLS listener on a free loopback port. */
export const LISTEN_ARGS = ['--listen', '127.0.0.1:0'];
/** The TLS stand-in's host id: a host with a credential may no longer come in on the Unix socket. */
export const TLS_STANDIN_HOST = 'bench-tls';

/** The port the controller's TLS listener got (it was asked for port 0). */
export async function tlsPort(env: NodeJS.ProcessEnv): Promise<number> {
  const s = JSON.parse((await runCli(env, ['controller', 'status', '--json'])).out) as { listen?: { port: number } };
  if (!s.listen) throw new VdiskError('the controller reports no TLS listener', { code: 'ENOENT' });
  return s.listen.port;
}

/** `vdisk host add HOST --out DIR/HOST.pem`, then the endpoint an agent of HOST connects to with it. */
export async function hostEndpoint(env: NodeJS.ProcessEnv, port: number, hostId: string, dir: string): Promise<TlsEndpoint> {
  const file = path.join(dir, `${hostId}.pem`);
  await runCli(env, ['host', 'add', hostId, '--out', file]);
  return { host: '127.0.0.1', port, credential: readCredential(file) };
}

/** Issues every host its credential (a few CLI runs at a time), then connects each as its own host over TLS. */
export async function tlsAgentConnector(dataDir: string, hostIds: string[]): Promise<(hostId: string) => Promise<Connection>> {
  const env = { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/root', VDISK_DATA_DIR: dataDir };
  const port = await tlsPort(env);
  const endpoints = new Map<string, TlsEndpoint>();
  const queue = [...hostIds];
  await Promise.all(Array.from({ length: 4 }, async () => {
    for (let h = queue.shift(); h !== undefined; h = queue.shift()) endpoints.set(h, await hostEndpoint(env, port, h, dataDir));
  }));
  return async (hostId) => {
    const e = endpoints.get(hostId);
    if (!e) throw new VdiskError(`no credential was issued for ${hostId}`, { code: 'ENOENT' });
    return (await connect(e, { role: 'agent', hostId })).conn;
  };
}
