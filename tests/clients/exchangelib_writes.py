"""exchangelib 5.6 writes through crmgate; prints what happened as JSON.

Usage: python exchangelib_writes.py EWS_URL ADMIN_URL LOGIN PASSWORD ADMIN_LOGIN ADMIN_PASSWORD RICH_ID
"""
import json
import os
import sys

import requests
from exchangelib import BASIC, DELEGATE, Account, Configuration, Credentials, EWSDate
from exchangelib.errors import ErrorAccessDenied, ErrorIrresolvableConflict, ErrorItemNotFound
from exchangelib.indexed_properties import EmailAddress, PhoneNumber, PhysicalAddress
from exchangelib.items import Contact

ews, admin, login, password, admin_login, admin_password, rich_id = sys.argv[1:8]
verify = os.environ.get("REQUESTS_CA_BUNDLE", True)
cfg = Configuration(service_endpoint=ews, credentials=Credentials(login, password), auth_type=BASIC)
a = Account(login, config=cfg, autodiscover=False, access_type=DELEGATE)
my = a.contacts / "HQ My Contacts"
glob = a.contacts / "HQ Global Contacts"
out = {}


def crm(cid):
    r = requests.get(f"{admin}/contacts/{cid}", auth=(admin_login, admin_password), verify=verify)
    return r.status_code, (r.json() if r.ok else None)


def crm_put(cid, rec):
    r = requests.put(f"{admin}/contacts/{cid}", json=rec, auth=(admin_login, admin_password), verify=verify)
    r.raise_for_status()


# 1. Create with e-mail, phones, address, birthday, categories; refresh; round trip.
c = Contact(folder=my, display_name="Nina Neu", given_name="Nina", surname="Neu",
            email_addresses=[EmailAddress(label="EmailAddress1", email="nina@neu.example")],
            phone_numbers=[PhoneNumber(label="MobilePhone", phone_number="0171 5551234"),
                           PhoneNumber(label="BusinessPhone", phone_number="030 5550000")],
            physical_addresses=[PhysicalAddress(label="Home", street="Weg 1", city="Berlin", zipcode="10115", country="DE")],
            birthday=EWSDate(1985, 7, 1), categories=["VIP"], company_name="No Such Company Ltd")
c.save()
c.refresh()
out["created"] = {
    "display_name": c.display_name, "emails": [e.email for e in c.email_addresses or []],
    "phones": {p.label: p.phone_number for p in c.phone_numbers or []},
    "home_city": next((p.city for p in c.physical_addresses or [] if p.label == "Home"), None),
    "birthday": str(c.birthday), "categories": c.categories, "company": c.company_name,
}
created_id = c.id
created_crm = [r for r in requests.get(f"{admin}/contacts?limit=10000", auth=(admin_login, admin_password), verify=verify).json()["items"] if r.get("last_name") == "Neu" and r.get("first_name") == "Nina"]
out["created_crm"] = created_crm[0] if created_crm else None

# 2. The rich contact (4 e-mails, 3 work phones, 2 websites): replace EmailAddress1 by
#    EmailAddress2 the way exchangelib does it, and set the job title.
rich = next(x for x in my.all() if x.surname == "Rich")
rich.email_addresses = [EmailAddress(label="EmailAddress2", email="second-new@rich.example")]
rich.job_title = "Chief Data Keeper"
rich.save(update_fields=["email_addresses", "job_title"])
out["rich_after"] = crm(rich_id)[1]

# 3. Clear a field.
rich.refresh()
rich.given_name = None
rich.save(update_fields=["given_name"])
out["rich_cleared"] = crm(rich_id)[1]

# 4. Stale change key: the CRM changes the job title in between -> conflict, nothing written.
rich.refresh()
rec = crm(rich_id)[1]
rec["job_title"] = "Changed In CRM"
crm_put(rich_id, rec)
rich.job_title = "Changed By Client"
try:
    rich.save(update_fields=["job_title"])
    out["stale_same_field"] = "accepted"
except ErrorIrresolvableConflict:
    out["stale_same_field"] = "ErrorIrresolvableConflict"
out["after_conflict"] = crm(rich_id)[1]["job_title"]
# AutoResolve: the CRM changes another field in between; the client's field still applies.
rich.refresh()
rec = crm(rich_id)[1]
rec["department"] = "Changed In CRM"
crm_put(rich_id, rec)
rich.surname = "Richer"
rich.save(update_fields=["surname"])
after = crm(rich_id)[1]
out["auto_resolve"] = {"department": after["department"], "last_name": after["last_name"]}

# 5. A write into the read-only Global folder.
try:
    Contact(folder=glob, display_name="G X", given_name="G", surname="X").save()
    out["global_write"] = "accepted"
except ErrorAccessDenied:
    out["global_write"] = "ErrorAccessDenied"

# 6. Delete under the default policy (hide): gone for this user, still in the CRM.
victim = my.get(id=created_id)
victim.delete()
try:
    my.get(id=created_id)
    out["deleted_visible"] = True
except ErrorItemNotFound:
    out["deleted_visible"] = False
out["deleted_in_crm"] = crm(out["created_crm"]["id"])[0] if out["created_crm"] else None
out["my_count"] = my.all().count()
print(json.dumps(out))
