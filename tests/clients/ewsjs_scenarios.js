// Drives crmgate with unmodified ews-javascript-api 0.15.3 and prints what the client saw as
// JSON. Usage: node ewsjs_scenarios.js URL LOGIN PASSWORD
// The Rust test (tests/ews_ewsjs.rs) checks the output against the CRM's rules.
const ews = require('ews-javascript-api');

const [url, login, password] = process.argv.slice(2);

async function main() {
  const svc = new ews.ExchangeService(ews.ExchangeVersion.Exchange2013_SP1);
  svc.Credentials = new ews.WebCredentials(login, password);
  svc.Url = new ews.Uri(url);
  const out = {};
  const folders = await svc.FindFolders(ews.WellKnownFolderName.Contacts, new ews.FolderView(10));
  out.folders = folders.Folders.map(f => ({ name: f.DisplayName, total: f.TotalCount, cls: f.FolderClass }));
  const my = folders.Folders.find(f => f.DisplayName === 'HQ My Contacts');
  const view = new ews.ItemView(50);
  const found = await svc.FindItems(my.Id, view);
  out.found_total = found.TotalCount;
  out.found = found.Items.map(c => ({
    name: c.DisplayName,
    given: c.GivenName,
    surname: c.Surname,
    company: c.CompanyName,
    email1: c.EmailAddresses.Contains(ews.EmailAddressKey.EmailAddress1)
      ? c.EmailAddresses._getItem(ews.EmailAddressKey.EmailAddress1).Address : null,
    business: c.PhoneNumbers.Contains(ews.PhoneNumberKey.BusinessPhone)
      ? c.PhoneNumbers._getItem(ews.PhoneNumberKey.BusinessPhone) : null,
  }));
  const first = found.Items[0];
  const bound = await ews.Contact.Bind(svc, first.Id);
  out.bound = { name: bound.DisplayName, job: bound.JobTitle, surname: bound.Surname };
  const sync = await svc.SyncFolderItems(my.Id, ews.PropertySet.FirstClassProperties, null, 100,
    ews.SyncFolderItemsScope.NormalItems, null);
  out.sync = { count: sync.Count, more: sync.MoreChangesAvailable, creates: 0 };
  for (let i = 0; i < sync.Count; i++) {
    if (sync._getItem(i).ChangeType === ews.ChangeType.Create) out.sync.creates++;
  }
  const again = await svc.SyncFolderItems(my.Id, ews.PropertySet.FirstClassProperties, null, 100,
    ews.SyncFolderItemsScope.NormalItems, sync.SyncState);
  out.sync_again = again.Count;
  console.log(JSON.stringify(out));
}

main().catch(e => { console.error(e && (e.stack || e.message || e)); process.exit(1); });
