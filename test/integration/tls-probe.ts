// A hostile peer of the controller's TLS port, run as its own process inside a host's network namespace by
// multi-host.test.ts: `node tls-probe.js MODE ADDR PORT CREDENTIAL`. Modes: `nocert` (TLS pinning the CA but
// presenting no certificate), `plain` (the protocol's hello in plaintext), `garbage` (an authenticated host
// sending 1,000 bad frames). Prints one JSON line: frames received, welcome or not, how it ended.
import net from 'node:net';
import tls from 'node:tls';
import { readCredential, SERVER_NAME } from '../../src/protocol/credential.js';
import { encodeJson, FrameDecoder } from '../../src/protocol/frame.js';
import { PROTOCOL_VERSION } from '../../src/protocol/messages.js';

const [mode, host, portText, credFile] = process.argv.slice(2);
const port = Number(portText);
const cred = readCredential(credFile);
const frames: Array<{ type?: string }> = [];
const decoder = new FrameDecoder();
let undecodable = false;
let error = '';
/** Called after each received frame (the garbage mode sends its last, broken frame once all are answered). */
let onFrame = () => {};

function follow(s: net.Socket): Promise<void> {
  s.on('data', (c: Buffer) => {
    try {
      for (const f of decoder.push(c)) {
        frames.push(f.kind === 'json' ? (f.msg as { type?: string }) : (f.header as { type?: string }));
        onFrame();
      }
    } catch {
      undecodable = true;
    }
  });
  s.on('error', (e) => { error ||= e.message; });
  return new Promise((resolve) => s.once('close', () => resolve()));
}

const hello = encodeJson({ type: 'hello', version: PROTOCOL_VERSION, role: 'agent' });
let closed: Promise<void>;
if (mode === 'plain') {
  const s = net.createConnection(port, host);
  closed = follow(s);
  s.write(hello);
  s.write(encodeJson({ type: 'req', id: 1, op: 'controller.status', args: {} }));
} else {
  const s = tls.connect({ host, port, servername: SERVER_NAME, minVersion: 'TLSv1.3', ca: [cred.ca],
    ...(mode === 'garbage' ? { key: cred.key, cert: cred.cert } : {}) });
  closed = follow(s);
  s.once('secureConnect', () => {
    s.write(hello);
    if (mode !== 'garbage') return;
    s.write(encodeJson({ type: 'req', id: 1, op: 'agent.register', args: { pid: 1, leaseMs: 5000, disks: [] } }));
    const ops = ['fault', 'disk.ioerror', 'agent.register', 'agent.ping', 'disk.rm', 'controller.stop', 'host.rm', 'nope', 'constructor'];
    const junk = [null, -1, 1.5, 'x', [], {}, 2 ** 53, true];
    for (let i = 0; i < 999; i++) {
      const args = { diskId: junk[i % junk.length], segment: junk[(i + 3) % junk.length], op: junk[(i + 5) % junk.length], name: 'd', hostId: 'h2' };
      s.write(encodeJson({ type: 'req', id: 2 + i, op: ops[i % ops.length], args }));
    }
    // Once all 1,000 are answered, a frame that is no frame at all: the controller must close this connection.
    let sent = false;
    onFrame = () => {
      if (sent || frames.filter((f) => f.type === 'res').length < 1000) return;
      sent = true;
      s.write(Buffer.from([0xff, 0xff, 0xff, 0xff, 9, 9, 9, 9]));
    };
  });
}
await closed;
const types = frames.map((f) => f.type ?? '?');
process.stdout.write(`${JSON.stringify({ frames: frames.length, welcome: types.includes('welcome'), errors: types.filter((x) => x === 'error').length,
  responses: types.filter((x) => x === 'res').length, undecodable, error })}\n`);
