// ews-javascript-api 0.15.3 writes through crmgate: Save -> Update(JobTitle, EmailAddress2)
// -> Bind shows the values -> Delete. Also updates the "rich" contact's JobTitle only.
// Usage: node ewsjs_writes.js URL LOGIN PASSWORD
const ews = require('ews-javascript-api');
const [url, login, password] = process.argv.slice(2);

async function main() {
  const svc = new ews.ExchangeService(ews.ExchangeVersion.Exchange2013_SP1);
  svc.Credentials = new ews.WebCredentials(login, password);
  svc.Url = new ews.Uri(url);
  const out = {};
  const folders = await svc.FindFolders(ews.WellKnownFolderName.Contacts, new ews.FolderView(10));
  const my = folders.Folders.find(f => f.DisplayName === 'HQ My Contacts');
  const c = new ews.Contact(svc);
  c.GivenName = 'Jens';
  c.Surname = 'Script';
  c.DisplayName = 'Jens Script';
  c.CompanyName = 'Spreewerk Maschinenbau GmbH';
  c.EmailAddresses._setItem(ews.EmailAddressKey.EmailAddress1, new ews.EmailAddress('jens@script.example'));
  c.PhoneNumbers._setItem(ews.PhoneNumberKey.BusinessPhone, '030 7771234');
  await c.Save(my.Id);
  out.saved_id = !!c.Id;
  c.JobTitle = 'Integrator';
  c.EmailAddresses._setItem(ews.EmailAddressKey.EmailAddress2, new ews.EmailAddress('jens2@script.example'));
  await c.Update(ews.ConflictResolutionMode.AutoResolve);
  const b = await ews.Contact.Bind(svc, c.Id);
  out.bound = {
    name: b.DisplayName, job: b.JobTitle, company: b.CompanyName,
    email1: b.EmailAddresses._getItem(ews.EmailAddressKey.EmailAddress1).Address,
    email2: b.EmailAddresses._getItem(ews.EmailAddressKey.EmailAddress2).Address,
    business: b.PhoneNumbers._getItem(ews.PhoneNumberKey.BusinessPhone),
  };
  // Rich contact: only the job title changes.
  const found = await svc.FindItems(my.Id, new ews.ItemView(200));
  const rich = found.Items.find(x => x.Surname === 'Rich');
  rich.JobTitle = 'Edited By EwsJs';
  await rich.Update(ews.ConflictResolutionMode.AutoResolve);
  await b.Delete(ews.DeleteMode.HardDelete);
  try {
    await ews.Contact.Bind(svc, c.Id);
    out.after_delete = 'found';
  } catch (e) {
    out.after_delete = (e && e.ErrorCode !== undefined) ? ews.ServiceError[e.ErrorCode] : String(e.message || e);
  }
  console.log(JSON.stringify(out));
}
main().catch(e => { console.error(e && (e.stack || e.message || e)); process.exit(1); });
