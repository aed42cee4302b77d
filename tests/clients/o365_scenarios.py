"""The O365 package (python-o365, unmodified) against crmgate's Graph face; prints what it saw as JSON.

Usage: python o365_scenarios.py BASE TOKEN
(BASE like https://127.0.0.1:PORT; SSL_CERT_FILE trusts crmgate's certificate.)

O365 talks to a fixed Graph host and has known folder defects; the workarounds used here are
the ones documented for it (a protocol subclass for the host, a requests session carrying the
bearer token, folders built from their id, the folder id set on new contacts).
"""
import json
import os
import sys
from urllib.parse import urlsplit

import requests
from O365 import Account
from O365.address_book import ContactFolder
from O365.connection import MSGraphProtocol

base, token = sys.argv[1:3]
if os.environ.get("SSL_CERT_FILE"):
    os.environ["REQUESTS_CA_BUNDLE"] = os.environ["SSL_CERT_FILE"]


class GatewayProtocol(MSGraphProtocol):
    _protocol_url = base + "/"


account = Account("crmgate-test-client", protocol=GatewayProtocol(api_version="v1.0"),
                  auth_flow_type="public", request_retries=0, requests_delay=0)
session = requests.Session()
session.headers["Authorization"] = f"Bearer {token}"
session.verify = os.environ.get("SSL_CERT_FILE", True)
wire = []


def record(r, *args, **kwargs):
    u = urlsplit(r.request.url)
    line = f"{r.request.method} {u.path}{'?' + u.query if u.query else ''} {r.status_code}"
    if r.status_code >= 400:
        try:
            line += " " + r.json()["error"]["code"]
        except Exception:  # noqa: BLE001 - not Graph error JSON
            line += " (no error JSON)"
    wire.append(line)


session.hooks["response"].append(record)
account.con.session = session
out = {}


def failure(f):
    # O365 turns a 401/403 into TokenExpiredError (it would refresh the token) and drops the
    # response, so the answer is read from the wire log.
    try:
        f()
        return "ok"
    except Exception:  # noqa: BLE001 - HTTPError or O365's TokenExpiredError
        return wire[-1].split(" ", 2)[2] if wire else "no request"


book = account.address_book()
out["folders"] = [f.name for f in book.get_folders()]
glob = book.get_folder(folder_name="HQ Global Contacts")
my = book.get_folder(folder_name="HQ My Contacts")
out["by_name"] = [glob.name, my.name, glob.folder_id != my.folder_id]


def folder(f):
    # Workaround: folders from get_folder() act as the root address book.
    return ContactFolder(parent=account, **{ContactFolder._cloud_data_key: {"id": f.folder_id, "displayName": f.name}})


myf, globf = folder(my), folder(glob)
mark = len(wire)
contacts = list(myf.get_contacts(limit=100, batch=10))
out["paged"] = [len(contacts), len({c.object_id for c in contacts})]
out["paging_wire"] = [w.split()[-1] for w in wire[mark:]]
out["tops"] = sorted({p for w in wire[mark:] for p in urlsplit(w.split()[1]).query.split("&") if "top" in p})

c = myf.new_contact()
c._Contact__folder_id = myf.folder_id  # workaround: new_contact() sets the id on the wrong class
c.name = "Mary"
c.surname = "Jackson"
c.emails.add("mj@example.com")
out["created"] = c.save()
got = account.con.get(f"{base}/v1.0/me/contacts/{c.object_id}").json()
out["created_in"] = [got["displayName"], got["parentFolderId"] == my.folder_id,
                     [e["address"] for e in got["emailAddresses"]]]

c.job_title = "Engineer"
out["updated"] = c.save()
c.job_title = "Engineer"  # resends givenName and the field: idempotent
out["updated_again"] = c.save()
got = account.con.get(f"{base}/v1.0/me/contacts/{c.object_id}").json()
out["after_update"] = [got["jobTitle"], got["givenName"], got["surname"]]

g = globf.new_contact()
g._Contact__folder_id = globf.folder_id
g.name = "Nobody"
out["post_global"] = failure(lambda: g.save())

# No delta in O365: by hand through the connection.
url = f"{base}/v1.0/me/contactFolders/{my.folder_id}/contacts/delta"
seen = 0
while True:
    page = account.con.get(url).json()
    seen += len(page["value"])
    if "@odata.nextLink" in page:
        url = page["@odata.nextLink"]
    else:
        delta_link = page["@odata.deltaLink"]
        break
out["delta_initial"] = seen

out["deleted"] = c.delete()
out["delete_again"] = failure(lambda: c.delete())
page = account.con.get(delta_link).json()
out["delta_after_delete"] = [[v["id"] == c.object_id, "@removed" in v] for v in page["value"]]
out["methods"] = sorted({w.split()[0] + " " + ("/".join(urlsplit(w.split()[1]).path.split("/")[3:4])) for w in wire})
print(json.dumps(out))
