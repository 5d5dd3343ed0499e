"""benchmarks.settings plus two extra aliases on the same database, for the probe's server-side-binding variants."""

import os

os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:54377/pgqueue_h3")

from benchmarks.settings import *  # noqa: E402,F403
from benchmarks.settings import DATABASES  # noqa: E402

_default = DATABASES["default"]
DATABASES = {
    "default": _default,
    # Django 5.2: server_side_binding=True -> psycopg Cursor (server-side binding); prepare_threshold stays None
    # (Django forces None unless OPTIONS sets it), so nothing is prepared.
    "ssb": {**_default, "OPTIONS": {**_default.get("OPTIONS", {}), "server_side_binding": True}},
    # The same with prepare_threshold=5: psycopg prepares a statement after 5 executions on the connection.
    "ssb_prep": {**_default, "OPTIONS": {**_default.get("OPTIONS", {}), "server_side_binding": True,
                                         "prepare_threshold": 5}},
}
DEBUG = False
