"""Drives crmgate with unmodified exchangelib 5.6 and prints what the client saw, as JSON.

Usage: python exchangelib_scenarios.py PHASE URL LOGIN PASSWORD [STATE_FILE]
The Rust test (tests/ews_clients.rs) checks the output against the CRM's rules.
"""
import json
import sys

from exchangelib import (BASIC, DELEGATE, IMPERSONATION, Account, Configuration, Credentials)
from exchangelib.errors import ErrorInvalidSyncStateData, ErrorAccessDenied
from exchangelib.folders import Contacts
from exchangelib.items import Contact

phase, url, login, password = sys.argv[1:5]
state_file = sys.argv[5] if len(sys.argv) > 5 else None


def account(access_type=None, probe=True):
    creds = Credentials(login, password)
    if probe:
        # No auth type, no version: exchangelib probes both.
        cfg = Configuration(service_endpoint=url, credentials=creds)
    else:
        cfg = Configuration(service_endpoint=url, credentials=creds, auth_type=BASIC)
    kw = {} if access_type is None else {"access_type": access_type}
    return Account(login, config=cfg, autodiscover=False, **kw)


def names(folder):
    return sorted(c.display_name for c in folder.all().only("display_name"))


out = {}
if phase == "read":
    a = account(DELEGATE)
    out["version"] = str(a.version.build)
    tree = a.root.tree()
    out["tree_has_folders"] = ("HQ My Contacts" in tree) and ("HQ Global Contacts" in tree)
    my = a.contacts / "HQ My Contacts"
    glob = a.contacts / "HQ Global Contacts"
    out["my_class"] = type(my).__name__
    out["my"] = names(my)
    out["global"] = names(glob)
    out["my_count"] = my.all().count()
    out["global_count"] = glob.all().count()
    ordered = [c.display_name for c in glob.all().order_by("display_name").only("display_name")]
    out["ordered"] = ordered
    out["slice"] = [c.display_name for c in glob.all().order_by("display_name").only("display_name")[5:8]]
    first = ordered[0] if ordered else ""
    needle = first.split(" ")[-1][:4] if first else "x"
    out["needle"] = needle
    out["contains"] = sorted(c.display_name for c in glob.filter(display_name__contains=needle).only("display_name"))
    full = list(my.all().order_by("display_name")[:3])
    out["full"] = [{
        "display_name": c.display_name,
        "given_name": c.given_name,
        "surname": c.surname,
        "company_name": c.company_name,
        "emails": [e.email for e in (c.email_addresses or [])],
        "phones": {p.label: p.phone_number for p in (c.phone_numbers or [])},
    } for c in full]
    # Default access type: impersonation of oneself.
    b = account(None, probe=False)
    out["impersonated_my_count"] = (b.contacts / "HQ My Contacts").all().count()
    # A write is refused cleanly.
    try:
        Contact(folder=glob, display_name="X Y", given_name="X", surname="Y").save()
        out["write"] = "accepted"
    except ErrorAccessDenied:
        out["write"] = "ErrorAccessDenied"
elif phase == "names":
    a = account(DELEGATE, probe=False)
    out["my"] = names(a.contacts / "HQ My Contacts")
    out["global"] = names(a.contacts / "HQ Global Contacts")
elif phase == "sync1":
    a = account(DELEGATE, probe=False)
    glob = a.contacts / "HQ Global Contacts"
    seen = {}
    for change, item in glob.sync_items(max_changes_returned=100):
        seen.setdefault(change, []).append(item.display_name if change != "delete" else item.id)
    out["changes"] = {k: (sorted(v) if k != "delete" else len(v)) for k, v in seen.items()}
    out["state"] = glob.item_sync_state
    my = a.contacts / "HQ My Contacts"
    list(my.sync_items())
    out["my_state"] = my.item_sync_state
elif phase == "sync2":
    a = account(DELEGATE, probe=False)
    glob = a.contacts / "HQ Global Contacts"
    my = a.contacts / "HQ My Contacts"
    states = json.load(open(state_file))
    result = {}
    for name, folder, st in [("global", glob, states["state"]), ("my", my, states["my_state"])]:
        folder.item_sync_state = st
        ch = {"create": [], "update": [], "delete": 0}
        for change, item in folder.sync_items():
            if change == "delete":
                ch["delete"] += 1
            elif change in ("create", "update"):
                ch[change].append(item.display_name)
        result[name] = {k: (sorted(v) if isinstance(v, list) else v) for k, v in ch.items()}
    out["changes"] = result
    glob.item_sync_state = "Ym9ndXM="
    try:
        list(glob.sync_items())
        out["bogus"] = "accepted"
    except ErrorInvalidSyncStateData:
        out["bogus"] = "ErrorInvalidSyncStateData"
print(json.dumps(out))
