"""msgraph-sdk (Python) against crmgate's Graph face; prints what the SDK saw as JSON.

Usage: python msgraph_scenarios.py BASE TOKEN READ_ONLY_TOKEN ADMIN_URL ADMIN_LOGIN ADMIN_PASSWORD PAULA_LOGIN
(BASE like https://127.0.0.1:PORT; SSL_CERT_FILE trusts crmgate's certificate.)
"""
import asyncio
import json
import os
import sys

import httpx
import requests
from kiota_abstractions.authentication import (AccessTokenProvider, AllowedHostsValidator,
                                               BaseBearerTokenAuthenticationProvider)
from kiota_abstractions.base_request_configuration import RequestConfiguration
from msgraph import GraphRequestAdapter, GraphServiceClient
from msgraph.generated.models.contact import Contact
from msgraph.generated.models.email_address import EmailAddress
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.generated.users.item.contact_folders.item.contacts.contacts_request_builder import ContactsRequestBuilder

base, token, ro_token, admin, admin_login, admin_password, paula = sys.argv[1:8]
verify = os.environ.get("SSL_CERT_FILE", True)


class StaticToken(AccessTokenProvider):
    def __init__(self, t):
        self.t = t

    async def get_authorization_token(self, uri, additional_authentication_context=None):
        return self.t

    def get_allowed_hosts_validator(self):
        return AllowedHostsValidator(["127.0.0.1", "localhost"])


def client(t):
    adapter = GraphRequestAdapter(BaseBearerTokenAuthenticationProvider(StaticToken(t)))
    adapter.base_url = base + "/v1.0"
    return GraphServiceClient(request_adapter=adapter)


async def err(coro):
    try:
        await coro
        return "ok"
    except ODataError as e:
        return f"{e.response_status_code} {e.error.code if e.error else ''}"


def cfg(**params):
    headers = params.pop("headers", {})
    q = ContactsRequestBuilder.ContactsRequestBuilderGetQueryParameters(**params) if params else None
    c = RequestConfiguration(query_parameters=q)
    for k, v in headers.items():
        c.headers.add(k, v)
    return c


async def main():
    c = client(token)
    out = {}
    # 1. Folder list.
    folders = (await c.me.contact_folders.get()).value
    out["folders"] = [f.display_name for f in folders]
    default = await c.me.contact_folders.by_contact_folder_id("contacts").get()
    out["parents_ok"] = all(f.parent_folder_id == default.id for f in folders)
    my = next(f for f in folders if f.display_name == "HQ My Contacts")
    glob = next(f for f in folders if f.display_name == "HQ Global Contacts")
    mycontacts = c.me.contact_folders.by_contact_folder_id(my.id).contacts

    # 3. Paging 10/10/5 and with maxpagesize.
    sizes, ids = [], set()
    page = await mycontacts.get(request_configuration=cfg(top=10, select=["displayName"]))
    while True:
        sizes.append(len(page.value))
        ids.update(x.id for x in page.value)
        out["select_only"] = sorted(k for k in (page.value[0].additional_data or {}).keys())
        if not page.odata_next_link:
            break
        page = await mycontacts.with_url(page.odata_next_link).get()
    out["pages"], out["unique"] = sizes, len(ids)
    out["select_given_name"] = page.value[0].given_name
    sizes = []
    page = await mycontacts.get(request_configuration=cfg(headers={"Prefer": "odata.maxpagesize=7"}))
    while True:
        sizes.append(len(page.value))
        if not page.odata_next_link:
            break
        page = await mycontacts.with_url(page.odata_next_link).get(request_configuration=cfg(headers={"Prefer": "odata.maxpagesize=7"}))
    out["pages_max7"] = sizes
    # 4. Count.
    out["count"] = (await mycontacts.get(request_configuration=cfg(count=True, top=1))).odata_count
    r = httpx.get(f"{base}/v1.0/me/contactFolders/{my.id}/contacts/$count", headers={"Authorization": f"Bearer {token}"}, verify=verify)
    out["count_text"] = [r.status_code, r.text, r.headers["content-type"].split(";")[0]]

    # 5. Get one, both forms; 404 and 400.
    one = sorted(ids)[0]
    a = await c.me.contacts.by_contact_id(one).get()
    b = await mycontacts.by_contact_id(one).get()
    out["get_same"] = a.display_name == b.display_name and a.change_key == b.change_key
    out["etag"] = (a.additional_data or {}).get("@odata.etag") == f'W/"{a.change_key}"'
    unknown = one[:-6] + ("AAAAAA" if not one.endswith("AAAAAA") else "BBBBBB")
    out["get_unknown"] = await err(c.me.contacts.by_contact_id(unknown).get())
    out["get_garbage"] = await err(c.me.contacts.by_contact_id("garbage").get())

    # 6. Create.
    new = await mycontacts.post(Contact(odata_type="#microsoft.graph.contact", given_name="Ada", surname="Lovelace",
                                        email_addresses=[EmailAddress(address="ada@example.test", name="Ada")],
                                        business_phones=["030 1234500"]))
    out["created"] = [new.display_name, new.parent_folder_id == my.id, bool(new.change_key)]
    four = Contact(given_name="X", email_addresses=[EmailAddress(address=f"{i}@x.test") for i in range(4)])
    out["four_emails"] = await err(mycontacts.post(four))
    out["three_phones"] = await err(mycontacts.post(Contact(given_name="X", business_phones=["1111", "2222", "3333"])))
    out["post_global"] = await err(c.me.contact_folders.by_contact_folder_id(glob.id).contacts.post(Contact(given_name="G")))

    # 7. Update, stale If-Match, *, null clears.
    etag = new.additional_data["@odata.etag"]
    upd = await c.me.contacts.by_contact_id(new.id).patch(Contact(job_title="Mathematician", mobile_phone="0171 2345678"))
    out["updated"] = [upd.job_title, upd.change_key != new.change_key, upd.mobile_phone]
    out["stale"] = await err(c.me.contacts.by_contact_id(new.id).patch(Contact(job_title="Stale"), request_configuration=cfg(headers={"If-Match": etag})))
    star = await c.me.contacts.by_contact_id(new.id).patch(Contact(department="R&D"), request_configuration=cfg(headers={"If-Match": "*"}))
    out["star"] = star.department
    r = httpx.patch(f"{base}/v1.0/me/contacts/{new.id}", json={"mobilePhone": None}, headers={"Authorization": f"Bearer {token}"}, verify=verify)
    out["cleared"] = r.json().get("mobilePhone")

    # 9. Delta round trip with maxpagesize 4.
    delta = mycontacts.delta
    hdr = cfg(headers={"Prefer": "odata.maxpagesize=4"})
    page = await delta.get(request_configuration=hdr)
    seen, pages = set(), 0
    while True:
        pages += 1
        seen.update(x.id for x in page.value)
        if page.odata_next_link:
            out["next_link_form"] = "('" in page.odata_next_link or "/contactFolders/" in page.odata_next_link
            page = await delta.with_url(page.odata_next_link).get(request_configuration=hdr)
            continue
        break
    out["delta_initial"] = [len(seen), pages]
    link = page.odata_delta_link
    # create + update + delete, then the deltaLink shows exactly those.
    created = await mycontacts.post(Contact(given_name="Grace", surname="Hopper"))
    await c.me.contacts.by_contact_id(new.id).patch(Contact(job_title="Analyst"))
    victim = sorted(ids)[1]
    await c.me.contacts.by_contact_id(victim).delete()
    page = await delta.with_url(link).get()
    got = {}
    for x in page.value:
        removed = (x.additional_data or {}).get("@removed")
        got[x.id] = "removed" if removed else x.display_name
    out["delta_changes"] = sorted(got.get(k, "?") for k in [created.id, new.id, victim])
    out["delta_only_those"] = set(got) == {created.id, new.id, victim}
    link = page.odata_delta_link
    page = await delta.with_url(link).get()
    out["delta_again"] = [len(page.value), bool(page.odata_delta_link)]
    link = page.odata_delta_link

    # 10. Move: the CRM gives Paula's company to someone else -> removed here... (in Paula's view)
    # 8. Delete.
    r1 = await err(c.me.contacts.by_contact_id(created.id).delete())
    r2 = await err(c.me.contacts.by_contact_id(created.id).delete())
    r3 = await err(c.me.contacts.by_contact_id(created.id).get())
    out["delete"] = [r1, r2, r3]

    # 12. Tampered deltaLink.
    bad = link[:-8] + ("AAAAAAAA" if not link.endswith("AAAAAAAA") else "BBBBBBBB")
    out["tampered"] = await err(delta.with_url(bad).get())
    out["fresh_delta"] = len((await delta.get()).value) > 0

    # 13. Other users.
    me_upn = (await c.me.contact_folders.get()).value
    via_upn = (await c.users.by_user_id(paula).contact_folders.get()).value
    out["upn_same"] = [f.id for f in me_upn] == [f.id for f in via_upn]
    out["other_user"] = await err(c.users.by_user_id("anna@example.test").contact_folders.get())
    # 14. Read-only token writes.
    ro = client(ro_token)
    out["ro_read"] = len((await ro.me.contact_folders.get()).value)
    out["ro_write"] = await err(ro.me.contact_folders.by_contact_folder_id(my.id).contacts.post(Contact(given_name="No")))
    print(json.dumps(out))


asyncio.run(main())
