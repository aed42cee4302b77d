"""msgraph-sdk (Python, unmodified, default middleware) against a crmgate whose per-user limit
is low: a burst of concurrent reads must all succeed, the SDK's RetryHandler waiting out each
429's Retry-After by itself. Prints {"ok": n, "ms": elapsed}.

Usage: python msgraph_retry.py BASE TOKEN N   (SSL_CERT_FILE trusts crmgate's certificate)
"""
import asyncio
import json
import sys
import time

from kiota_abstractions.authentication import (AccessTokenProvider, AllowedHostsValidator,
                                               BaseBearerTokenAuthenticationProvider)
from msgraph import GraphRequestAdapter, GraphServiceClient

base, token, n = sys.argv[1], sys.argv[2], int(sys.argv[3])


class StaticToken(AccessTokenProvider):
    async def get_authorization_token(self, uri, additional_authentication_context=None):
        return token

    def get_allowed_hosts_validator(self):
        return AllowedHostsValidator(["127.0.0.1", "localhost"])


async def main():
    adapter = GraphRequestAdapter(BaseBearerTokenAuthenticationProvider(StaticToken()))
    adapter.base_url = base + "/v1.0"
    client = GraphServiceClient(request_adapter=adapter)
    t = time.monotonic()
    all_ = await asyncio.gather(*[client.me.contact_folders.get() for _ in range(n)])
    ok = sum(1 for r in all_ if r and len(r.value) == 2)
    print(json.dumps({"ok": ok, "ms": int((time.monotonic() - t) * 1000)}))


asyncio.run(main())
