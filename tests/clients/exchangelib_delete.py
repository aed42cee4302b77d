"""exchangelib 5.6 deletes one contact (by surname) from HQ My Contacts; prints the outcome.

Usage: python exchangelib_delete.py EWS_URL LOGIN PASSWORD SURNAME
"""
import json
import sys

from exchangelib import BASIC, DELEGATE, Account, Configuration, Credentials
from exchangelib.errors import ErrorAccessDenied, ErrorItemNotFound

url, login, password, surname = sys.argv[1:5]
cfg = Configuration(service_endpoint=url, credentials=Credentials(login, password), auth_type=BASIC)
a = Account(login, config=cfg, autodiscover=False, access_type=DELEGATE)
my = a.contacts / "HQ My Contacts"
c = next(x for x in my.all() if x.surname == surname)
item_id = c.id  # exchangelib forgets the id once it deleted the item
out = {}
try:
    c.delete()
    out["delete"] = "ok"
except ErrorAccessDenied:
    out["delete"] = "ErrorAccessDenied"
try:
    my.get(id=item_id)
    out["visible"] = True
except ErrorItemNotFound:
    out["visible"] = False
print(json.dumps(out))
