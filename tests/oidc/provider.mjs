// A real OpenID Connect provider (panva's `oidc-provider`, pinned in
// package-lock.json) on loopback, for crates/server/tests/oidc_provider.rs.
// Nothing here is a mock: discovery, the JWKS endpoint, the token endpoint and
// the JWT access tokens are oidc-provider's own.
//
//   npm ci --prefix tests/oidc
//   node tests/oidc/provider.mjs [--port N]      (default: any free port)
//
// When it listens it prints ONE line of JSON on stdout and nothing else there:
//   {"issuer":"http://127.0.0.1:PORT","admin_token":"...","clients":{"<id>":"<secret>",...}}
// Client secrets and the admin token are random per start (test fixtures,
// never reused). Log lines go to stderr.
//
// Clients (OAuth 2.0 client credentials, client_secret_basic):
//   tg-events   scopes "events:write runs:read"
//   tg-reader   scope  "runs:read" only
// Resource indicators (RFC 8707) name the API a token is for; each yields a
// JWT access token (RFC 9068, `typ: at+jwt`, RS256) with that audience:
//   urn:triage-gate  -> aud "triage-gate" (the default when none is asked for)
//   urn:other-api    -> aud "other-api"   (a token for someone else)
//
// Key rotation: `POST /admin/rotate` with `Authorization: Bearer <admin_token>`
// makes a new RSA signing key, publishes it FIRST in the JWKS (so new tokens
// are signed with it) followed by the previous key (so tokens already issued
// still verify), and drops any older key. It answers {"kid": "<new kid>",
// "kids": [...published]}. The provider is rebuilt with the new key set and
// swapped in behind the same listener, so the issuer and every URL stay
// the same. Nothing but this test fixture should ever have such an endpoint.
//
// The process exits when its stdin closes, so a test that dies without
// killing it does not leave it behind.

import * as crypto from 'node:crypto';
import * as http from 'node:http';

import Provider, { errors } from 'oidc-provider';

const AUDIENCES = {
  'urn:triage-gate': 'triage-gate',
  'urn:other-api': 'other-api',
};
const SCOPES = ['events:write', 'runs:read'];
const ACCESS_TOKEN_TTL_SECS = 300;

function argPort() {
  const i = process.argv.indexOf('--port');
  if (i === -1) return 0;
  const port = Number(process.argv[i + 1]);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    console.error(`--port must be 0..=65535, got ${process.argv[i + 1]}`);
    process.exit(2);
  }
  return port;
}

const random = () => crypto.randomBytes(24).toString('base64url');

let generation = 0;
function newSigningKey() {
  generation += 1;
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { ...privateKey.export({ format: 'jwk' }), kid: `rsa-${generation}`, alg: 'RS256', use: 'sig' };
}

const clients = { 'tg-events': random(), 'tg-reader': random() };
const clientScopes = { 'tg-events': 'events:write runs:read', 'tg-reader': 'runs:read' };
const adminToken = random();
const cookieKeys = [random()];

function build(issuer, signingKeys) {
  const provider = new Provider(issuer, {
    clients: Object.entries(clients).map(([id, secret]) => ({
      client_id: id,
      client_secret: secret,
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
      token_endpoint_auth_method: 'client_secret_basic',
      scope: clientScopes[id],
    })),
    scopes: SCOPES,
    jwks: { keys: signingKeys },
    cookies: { keys: cookieKeys },
    ttl: { ClientCredentials: ACCESS_TOKEN_TTL_SECS },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: async (_ctx, _client, oneOf) => oneOf ?? 'urn:triage-gate',
        useGrantedResource: async () => true,
        getResourceServerInfo: async (_ctx, resource) => {
          const audience = AUDIENCES[resource];
          if (!audience) throw new errors.InvalidTarget(`unknown resource ${resource}`);
          return {
            audience,
            scope: SCOPES.join(' '),
            accessTokenFormat: 'jwt',
            accessTokenTTL: ACCESS_TOKEN_TTL_SECS,
            jwt: { sign: { alg: 'RS256' } },
          };
        },
      },
    },
  });
  provider.on('server_error', (_ctx, err) => console.error('oidc-provider server_error:', err));
  return provider;
}

let keys = [newSigningKey()];
let handler = null;

function publicKids() {
  return keys.map((k) => k.kid);
}

async function adminRotate(req, res) {
  const auth = req.headers.authorization ?? '';
  const expected = `Bearer ${adminToken}`;
  const ok = auth.length === expected.length
    && crypto.timingSafeEqual(Buffer.from(auth), Buffer.from(expected));
  res.setHeader('content-type', 'application/json');
  if (req.method !== 'POST' || !ok) {
    res.statusCode = ok ? 405 : 401;
    res.end(JSON.stringify({ error: ok ? 'method not allowed' : 'unauthorized' }));
    return;
  }
  keys = [newSigningKey(), keys[0]];
  handler = build(issuer, keys).callback();
  console.error(`oidc-provider: rotated signing keys, JWKS now ${publicKids().join(', ')}`);
  res.end(JSON.stringify({ kid: keys[0].kid, kids: publicKids() }));
}

const server = http.createServer((req, res) => {
  if (req.url.startsWith('/admin/')) {
    adminRotate(req, res).catch((err) => {
      console.error(err);
      res.statusCode = 500;
      res.end();
    });
    return;
  }
  handler(req, res);
});

let issuer;
server.listen(argPort(), '127.0.0.1', () => {
  const { port } = server.address();
  issuer = `http://127.0.0.1:${port}`;
  handler = build(issuer, keys).callback();
  process.stdout.write(`${JSON.stringify({ issuer, admin_token: adminToken, clients })}\n`);
  console.error(`oidc-provider: listening, issuer ${issuer}, JWKS ${publicKids().join(', ')}`);
});

process.stdin.on('end', () => process.exit(0));
process.stdin.on('error', () => process.exit(0));
process.stdin.resume();
for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => process.exit(0));
