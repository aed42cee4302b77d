// @microsoft/microsoft-graph-client 3.0.7 (unmodified, default middleware) against a crmgate
// whose per-user limit is low: a burst of concurrent reads must all succeed, the client's
// RetryHandler waiting out each 429's Retry-After by itself.
// Usage: node graphjs_retry.js BASE TOKEN N   (NODE_EXTRA_CA_CERTS trusts crmgate's cert)
require('isomorphic-fetch');
const { Client } = require('@microsoft/microsoft-graph-client');
const [base, token, n] = process.argv.slice(2);

async function main() {
  const client = Client.initWithMiddleware({
    baseUrl: base, defaultVersion: 'v1.0',
    authProvider: { getAccessToken: async () => token },
    customHosts: new Set([new URL(base).hostname]),
  });
  const t = Date.now();
  const all = await Promise.all([...Array(Number(n)).keys()].map(() => client.api('/me/contactFolders').get()));
  const ok = all.filter(r => r.value && r.value.length === 2).length;
  console.log(JSON.stringify({ ok, ms: Date.now() - t }));
}
main().catch(e => { console.error(e); process.exit(1); });
