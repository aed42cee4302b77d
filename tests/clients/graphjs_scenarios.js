// @microsoft/microsoft-graph-client 3.0.7 (unmodified) against crmgate over HTTPS.
// Usage: node graphjs_scenarios.js BASE TOKEN   (NODE_EXTRA_CA_CERTS trusts crmgate's cert)
require('isomorphic-fetch');
const { Client, PageIterator } = require('@microsoft/microsoft-graph-client');
const [base, token] = process.argv.slice(2);
const host = new URL(base).hostname;

async function main() {
  const client = Client.initWithMiddleware({
    baseUrl: base, defaultVersion: 'v1.0',
    authProvider: { getAccessToken: async () => token },
    customHosts: new Set([host]),
  });
  const out = {};
  const folders = await client.api('/me/contactFolders').get();
  out.folders = folders.value.map(f => f.displayName);
  const my = folders.value.find(f => f.displayName === 'HQ My Contacts');
  const glob = folders.value.find(f => f.displayName === 'HQ Global Contacts');
  // Paging with PageIterator: 25 contacts, $top=10.
  const first = await client.api(`/me/contactFolders/${my.id}/contacts`).top(10).select('displayName,emailAddresses').get();
  const ids = new Set();
  let pages = 0;
  const it = new PageIterator(client, first, (c) => { ids.add(c.id); return true; });
  await it.iterate();
  out.unique = ids.size;
  const one = [...ids].sort()[0];
  const got = await client.api(`/me/contacts/${one}`).get();
  out.etag_ok = got['@odata.etag'] === `W/"${got.changeKey}"`;
  // Create, update with If-Match, stale If-Match, delete.
  const created = await client.api(`/me/contactFolders/${my.id}/contacts`).post({ givenName: 'Katherine', surname: 'Johnson', emailAddresses: [{ address: 'kj@example.test' }] });
  out.created = [created.displayName, created.parentFolderId === my.id];
  const upd = await client.api(`/me/contacts/${created.id}`).header('If-Match', created['@odata.etag']).patch({ jobTitle: 'Supervisor' });
  out.updated = upd.jobTitle;
  try {
    await client.api(`/me/contacts/${created.id}`).header('If-Match', created['@odata.etag']).patch({ jobTitle: 'Stale' });
    out.stale = 'accepted';
  } catch (e) { out.stale = `${e.statusCode} ${e.code}`; }
  try {
    await client.api(`/me/contactFolders/${glob.id}/contacts`).post({ givenName: 'No' });
    out.global = 'accepted';
  } catch (e) { out.global = `${e.statusCode} ${e.code}`; }
  // Delta: pages of 4 to a deltaLink, then a delete shows as @removed.
  let page = await client.api(`/me/contactFolders/${my.id}/contacts/delta`).header('Prefer', 'odata.maxpagesize=4').get();
  let n = 0;
  for (;;) {
    pages++;
    n += page.value.length;
    if (!page['@odata.nextLink']) break;
    page = await client.api(page['@odata.nextLink']).header('Prefer', 'odata.maxpagesize=4').get();
  }
  out.delta = [n, pages];
  const link = page['@odata.deltaLink'];
  await client.api(`/me/contacts/${created.id}`).delete();
  const after = await client.api(link).get();
  out.removed = after.value.map(v => v['@removed'] ? 'removed' : v.displayName);
  try {
    await client.api(`/me/contacts/${created.id}`).get();
    out.after_delete = 'found';
  } catch (e) { out.after_delete = `${e.statusCode} ${e.code}`; }
  console.log(JSON.stringify(out));
}
main().catch(e => { console.error(e && (e.stack || e.message || JSON.stringify(e))); process.exit(1); });
