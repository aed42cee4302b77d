"""exchangelib and msgraph-sdk editing contacts through crmgate on HubSpot; prints what the
clients saw as JSON.

Usage: python hubspot_edits.py BASE LOGIN PASSWORD GRAPH_TOKEN
(BASE like https://127.0.0.1:PORT; REQUESTS_CA_BUNDLE and SSL_CERT_FILE trust crmgate's
certificate.)
"""
import asyncio
import json
import sys

from exchangelib import BASIC, DELEGATE, Account, Configuration, Credentials
from kiota_abstractions.authentication import (AccessTokenProvider, AllowedHostsValidator,
                                               BaseBearerTokenAuthenticationProvider)
from msgraph import GraphRequestAdapter, GraphServiceClient
from msgraph.generated.models.contact import Contact

base, login, password, token = sys.argv[1:5]
out = {}

# exchangelib: the job title of A0 in My, saved as exchangelib saves one changed field.
cfg = Configuration(service_endpoint=base + "/EWS/Exchange.asmx",
                    credentials=Credentials(login, password), auth_type=BASIC)
a = Account(login, config=cfg, autodiscover=False, access_type=DELEGATE)
my = a.contacts / "HQ My Contacts"
c = my.get(given_name="A0")
c.job_title = "Set by exchangelib"
c.save(update_fields=["job_title"])
out["exchangelib"] = my.get(given_name="A0").job_title


class StaticToken(AccessTokenProvider):
    async def get_authorization_token(self, uri, additional_authentication_context=None):
        return token

    def get_allowed_hosts_validator(self):
        return AllowedHostsValidator(["127.0.0.1", "localhost"])


async def graph():
    adapter = GraphRequestAdapter(BaseBearerTokenAuthenticationProvider(StaticToken()))
    adapter.base_url = base + "/v1.0"
    g = GraphServiceClient(request_adapter=adapter)
    folders = await g.me.contact_folders.get()
    fid = next(f.id for f in folders.value if f.display_name == "HQ My Contacts")
    items = await g.me.contact_folders.by_contact_folder_id(fid).contacts.get()
    a1 = next(x for x in items.value if x.given_name == "A1")
    # The SDK sends only the properties set on the model.
    await g.me.contacts.by_contact_id(a1.id).patch(Contact(mobile_phone="+49 171 5550101"))
    again = await g.me.contacts.by_contact_id(a1.id).get()
    return again.mobile_phone


out["msgraph"] = asyncio.run(graph())
print(json.dumps(out))
