// Host credentials (issue 13 item 2): the controller makes its CA and server certificate on first start
// (0600, kept across restarts), `vdisk host add` issues one file per host binding the host id (key, certificate
// signed by that CA, the CA to pin), `host ls` lists them, `host rm` revokes; and a host with a credential is
// remote: attach never starts a local agent for it, and no agent on the Unix socket may speak for it.
import t from 'tap';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Controller } from '../../src/controller/controller.js';
import { CA_CERT, CA_KEY, SERVER_CERT, SERVER_KEY } from '../../src/controller/pki.js';
import { isControllerFile } from '../../src/controller/paths.js';
import { connect } from '../../src/protocol/client.js';
import { parseCredential, readCredential, SERVER_NAME } from '../../src/protocol/credential.js';
import { runCli } from '../support/cli.js';
import { scriptedController } from '../support/scripted-agent.js';

const CLIENT_AUTH = '1.3.6.1.5.5.7.3.2';
const SERVER_AUTH = '1.3.6.1.5.5.7.3.1';
const PKI_FILES = [CA_KEY, CA_CERT, SERVER_KEY, SERVER_CERT];

t.test('first start makes the CA and the server certificate, 0600, and a restart keeps them', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vdisk-pki-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  let c = await Controller.start(dir);
  const first = PKI_FILES.map((f) => fs.readFileSync(path.join(dir, f), 'utf8'));
  await c.stop();
  for (const f of PKI_FILES) {
    t.equal(fs.statSync(path.join(dir, f)).mode & 0o777, 0o600, `${f} is 0600`);
    t.ok(isControllerFile(f), `${f} is a controller file (never a container)`);
  }
  const ca = new crypto.X509Certificate(first[1]);
  const server = new crypto.X509Certificate(first[3]);
  t.ok(ca.ca, 'the CA certificate is a CA');
  t.ok(server.verify(ca.publicKey), 'the server certificate is signed by the CA');
  t.notOk(server.ca, 'the server certificate is no CA');
  t.equal(server.checkHost(SERVER_NAME), SERVER_NAME, `it names ${SERVER_NAME}, the identity agents check`);
  t.same(server.keyUsage, [SERVER_AUTH], 'for TLS servers only');
  t.ok(server.checkPrivateKey(crypto.createPrivateKey(first[2])), 'its key is beside it');
  c = await Controller.start(dir);
  await c.stop();
  t.same(PKI_FILES.map((f) => fs.readFileSync(path.join(dir, f), 'utf8')), first, 'a restart makes nothing new');
});

const { dir, cli, ask, scriptedAgent } = await scriptedController(t, 'vdisk-hosts-');
const caPem = fs.readFileSync(path.join(dir, CA_CERT), 'utf8');

t.test('host add issues one 0600 file: the key, a certificate binding the host id, the CA to pin', async (t) => {
  const file = path.join(dir, 'h1.pem');
  const r = await runCli(['host', 'add', 'h1', '--out', file], dir);
  t.equal(r.status, 0, r.err);
  t.match(r.out, /^host h1: credential .*h1\.pem \(serial [0-9A-F]+, valid until \d{4}-/);
  t.equal(fs.statSync(file).mode & 0o777, 0o600, 'the file is 0600');
  const c = readCredential(file);
  t.equal(c.hostId, 'h1');
  t.equal(c.ca, caPem, 'the CA is the controller\'s');
  const cert = new crypto.X509Certificate(c.cert);
  t.equal(cert.subject, 'CN=h1', 'the host id is the CN');
  t.equal(cert.subjectAltName, 'URI:vdisk:host:h1', 'and the SAN URI');
  t.same(cert.keyUsage, [CLIENT_AUTH], 'for TLS clients only: no credential can pose as the controller');
  t.notOk(cert.ca, 'no CA');
  t.ok(cert.verify(new crypto.X509Certificate(caPem).publicKey), 'signed by the controller\'s CA');
  const [rec] = await ask<Array<{ hostId: string; fingerprint: string; revokedAt: string | null }>>('host.ls');
  t.match(rec, { hostId: 'h1', fingerprint: cert.fingerprint256, revokedAt: null, connected: false }, 'recorded by its fingerprint');

  const out = await runCli(['host', 'add', 'h2'], dir);
  t.equal(out.status, 0, 'without --out the credential goes to stdout');
  t.equal(parseCredential(out.out).hostId, 'h2');
});

t.test('host add refuses: a second live credential, an existing --out file, a bad host id', async (t) => {
  const again = await runCli(['host', 'add', 'h1'], dir);
  t.equal(again.status, 2);
  t.match(again.err, /host h1 has a credential already: revoke it first \(vdisk host rm h1\)/);
  const existing = path.join(dir, 'taken.pem');
  fs.writeFileSync(existing, 'mine');
  const taken = await runCli(['host', 'add', 'h3', '--out', existing], dir);
  t.equal(taken.status, 2);
  t.match(taken.err, /cannot create .*taken\.pem/);
  t.equal(fs.readFileSync(existing, 'utf8'), 'mine', 'an existing file is never overwritten');
  const bad = await runCli(['host', 'add', 'no/slash'], dir);
  t.equal(bad.status, 1, 'a malformed host id is a usage error');
  t.same((await ask<Array<{ hostId: string }>>('host.ls')).map((h) => h.hostId), ['h1', 'h2'], 'nothing was issued for them');
  const parsed = await runCli(['host', 'ls', '--json'], dir);
  t.same(JSON.parse(parsed.out).map((h: { hostId: string }) => h.hostId), ['h1', 'h2']);
});

t.test('a credential file that does not hang together is refused when read', async (t) => {
  const good = fs.readFileSync(path.join(dir, 'h1.pem'), 'utf8');
  const blocks = good.match(/-----BEGIN [A-Z ]+-----[\s\S]+?-----END [A-Z ]+-----/g) ?? [];
  t.equal(blocks.length, 3, 'key, certificate, CA');
  const h2 = parseCredential((await runCli(['host', 'ls', '--json'], dir)).out.length ? good : good);
  t.equal(h2.hostId, 'h1');
  const otherKey = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
  t.throws(() => parseCredential([otherKey, blocks[1], blocks[2]].join('\n')), { code: 'EINVAL', message: /private key does not belong/ });
  t.throws(() => parseCredential([blocks[0], blocks[1]].join('\n')), { code: 'EINVAL', message: /one private key and two certificates/ });
  t.throws(() => parseCredential('garbage'), { code: 'EINVAL' });
});

t.test('a host with a credential is remote: attach says its agent is not connected, starts none here', async (t) => {
  await ask('container.add', { name: 'c1', path: path.join(dir, 'c1.img'), size: 16 << 20 });
  await ask('disk.create', { name: 'd1', size: 4 << 20 });
  await t.rejects(cli.request('disk.attach', { name: 'd1', hostId: 'h1' }), { code: 'EHOSTDOWN', message: /the agent of remote host h1 is not connected: start it on h1/ });
  const r = await runCli(['attach', 'd1', '--host-id', 'h1'], dir);
  t.equal(r.status, 2);
  t.match(r.err, /remote host h1 is not connected/);
  t.same(await ask('agent.ls'), [], 'no local agent was started for it');
  t.same(await ask('attachment.ls'), [], 'and nothing was recorded');
  await t.rejects(connect(path.join(dir, 'controller.sock'), { role: 'agent', hostId: 'h1' }).then(async ({ conn }) => {
    await conn.request('agent.register', { pid: process.pid, leaseMs: 5000, disks: [] });
  }), { code: 'EACCES', message: /host h1 is a remote host/ }, 'an agent on the Unix socket may not speak for it');
  const local = await scriptedAgent('h9', 3);
  t.same((await local.conn.request('agent.ping')).result, {}, 'a host without a credential is served on the Unix socket as before');
  const busy = await runCli(['host', 'add', 'h9'], dir);
  t.equal(busy.status, 2, 'no credential for a host whose local agent is connected');
  t.match(busy.err, /a local agent serves host h9/);
});

t.test('host rm revokes: listed as revoked, refused twice, then a new credential may be issued', async (t) => {
  const r = await runCli(['host', 'rm', 'h2'], dir);
  t.equal(r.status, 0, r.err);
  t.match(r.out, /^host h2: credential revoked/);
  t.match(await ask('host.ls'), [{ hostId: 'h1', revokedAt: null }, { hostId: 'h2', revokedAt: /^\d{4}-/ }]);
  const twice = await runCli(['host', 'rm', 'h2'], dir);
  t.equal(twice.status, 2);
  t.match(twice.err, /revoked already/);
  t.match((await runCli(['host', 'rm', 'nobody'], dir)).err, /host nobody has no credential/);
  t.match((await runCli(['host', 'ls'], dir)).out, /h2\s+revoked \d{4}-/);
  const re = await runCli(['host', 'add', 'h2'], dir);
  t.equal(re.status, 0, 'a revoked host may get a new credential');
  t.match(await ask('host.ls'), [{ hostId: 'h1' }, { hostId: 'h2', revokedAt: null }]);
});
