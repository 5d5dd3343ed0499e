"""The audit log's one writer: every operator action (an admin action or page, a management command) is
recorded by record(), with who did it, what, to how many of how many selected, and the scope."""

from __future__ import annotations

import getpass
from collections.abc import Sequence
from typing import Any

from pgqueue.conf import get_settings
from pgqueue.models import AuditEntry

OBJECT_IDS_MAX = 1000  # the ids or names an entry keeps
USERNAME_MAX = 150  # the username column's length


def record(*, action: str, target: str, changed: Sequence[Any], selected: int, scope: str = "",
           user: Any = None, alias: str | None = None) -> AuditEntry:
    """Write one audit entry for an action that changed `changed` (ids or names, kept as given: the first
    OBJECT_IDS_MAX) of `selected` rows. `user`:
    the request's user (an anonymous one is recorded without a name), or None for a management command,
    recorded as "manage.py (<OS user>)"."""
    if user is None:
        who, username = None, command_user()
    elif user.is_authenticated:
        who, username = user, user.get_username()
    else:
        who, username = None, ""
    return AuditEntry.objects.using(alias or get_settings().DATABASE).create(
        user=who, username=username[:USERNAME_MAX], action=action, target=target, count=len(changed),
        selected=selected, object_ids=list(changed[:OBJECT_IDS_MAX]), scope=scope,
    )


def command_user() -> str:
    """Who runs a management command: "manage.py (<OS user>)"."""
    try:
        name = getpass.getuser()
    except Exception:  # no user name in this environment
        name = "unknown user"
    return f"manage.py ({name})"
