// The welcome's own time budget: a TLS handshake that takes most of the connect timeout (an emulated or
// loaded host) must not leave the controller a millisecond to answer hello. Before the fix the deadline was
// shared and such an agent retried forever ("no handshake within 1 ms" in the multi-host VM test).
import t from 'tap';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { ensureServerPki, issueHost } from '../../src/controller/pki.js';
import { connect } from '../../src/protocol/client.js';
import { parseCredential } from '../../src/protocol/credential.js';
import { encodeJson, FrameDecoder } from '../../src/protocol/frame.js';
import { PROTOCOL_VERSION } from '../../src/protocol/messages.js';

t.test('a slow TLS handshake still leaves the welcome its full budget', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vdisk-tls-budget-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const pki = await ensureServerPki(dir);
  const credential = parseCredential((await issueHost(dir, 'h1')).credential);
  const TIMEOUT = 1000;
  let hellos = 0;
  // The handshake waits 70 % of the timeout (the server's certificate is chosen late), the welcome 40 % more.
  const server = tls.createServer({
    key: pki.key, cert: pki.cert, ca: [pki.ca], requestCert: true, rejectUnauthorized: true, minVersion: 'TLSv1.3',
    SNICallback: (_name, cb) => setTimeout(() => cb(null, tls.createSecureContext({ key: pki.key, cert: pki.cert, ca: [pki.ca] })), TIMEOUT * 0.7),
  }, (s) => {
    const d = new FrameDecoder();
    s.on('data', (c: Buffer) => {
      if (d.push(c).length === 0) return;
      hellos++;
      setTimeout(() => s.write(encodeJson({ type: 'welcome', version: PROTOCOL_VERSION, serverId: 'slow' })), TIMEOUT * 0.4);
    });
    s.on('error', () => {});
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  t.teardown(() => new Promise<void>((r) => server.close(() => r())));
  const port = (server.address() as { port: number }).port;
  const { conn, welcome } = await connect({ host: '127.0.0.1', port, credential }, { role: 'agent', timeoutMs: TIMEOUT });
  t.equal(hellos, 1, 'the server got the hello after its slow handshake');
  t.equal(welcome.serverId, 'slow', 'and its welcome, 110 % of the timeout after the start, was taken');
  conn.socket.destroy();
});
