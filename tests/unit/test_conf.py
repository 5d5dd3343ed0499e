"""Settings: defaults, validation with precise messages, environment overrides."""

import pytest
from django.core.exceptions import ImproperlyConfigured

from pgqueue import conf


def test_defaults_are_valid() -> None:
    s = conf.load({}, environ={})
    assert s.DATABASE == "default" and s.DEFAULT_QUEUE == "default" and s.QUEUES is None
    assert s.HEARTBEAT_SECONDS < s.LEASE_SECONDS


def test_environment_overrides_settings() -> None:
    s = conf.load({"LEASE_SECONDS": 10}, environ={"PGQUEUE_LEASE_SECONDS": "42.5", "PGQUEUE_QUEUES": "a, b,default"})
    assert s.LEASE_SECONDS == 42.5
    assert s.QUEUES == ("a", "b", "default")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"LEASE_SECONDS": 0}, "LEASE_SECONDS'] must be greater than 0"),
        ({"HEARTBEAT_SECONDS": 60}, "must be shorter than PGQUEUE['LEASE_SECONDS']"),
        ({"QUEUES": ["a"]}, "DEFAULT_QUEUE'] 'default' is not in PGQUEUE['QUEUES']"),
        ({"MAX_PAYLOAD_BYTES": "lots"}, "MAX_PAYLOAD_BYTES'] has an invalid value 'lots'"),
        ({"NO_SUCH_OPTION": 1}, "unknown option(s) NO_SUCH_OPTION"),
        ({"DEFAULT_QUEUE": "a,b"}, "Invalid queue name 'a,b'"),
        ({"DEFAULT_MAX_ATTEMPTS": True}, "expected an integer"),
    ],
)
def test_bad_settings_say_what_is_wrong(options: dict, message: str) -> None:
    with pytest.raises(ImproperlyConfigured) as excinfo:
        conf.load(options, environ={})
    assert message in str(excinfo.value)


def test_bad_environment_value_names_the_variable() -> None:
    with pytest.raises(ImproperlyConfigured, match="environment variable PGQUEUE_POLL_SECONDS"):
        conf.load({}, environ={"PGQUEUE_POLL_SECONDS": "soon"})


def test_settings_must_be_a_dict() -> None:
    with pytest.raises(ImproperlyConfigured, match="must be a dict"):
        conf.load(["LEASE_SECONDS"], environ={})


def test_settings_object_is_frozen() -> None:
    s = conf.load({}, environ={})
    with pytest.raises(AttributeError):
        s.LEASE_SECONDS = 1  # type: ignore[misc]


def test_pooler_settings_decide_preparing_and_the_lead() -> None:
    direct = conf.load({}, environ={})
    assert direct.POOLER == "none" and direct.prepare and not direct.transaction_pooled
    assert direct.lead_seconds == 5.0  # 4 x MAINTENANCE_SECONDS (0.5 s), at least 5 s
    pooled = conf.load({}, environ={"PGQUEUE_POOLER": "transaction", "PGQUEUE_LISTEN_DATABASE": "direct"})
    assert pooled.transaction_pooled and not pooled.prepare and pooled.LISTEN_DATABASE == "direct"
    # PgBouncer 1.21+ keeps protocol-level prepared statements: the operator may say so
    assert conf.load({"POOLER": "transaction", "PREPARE_STATEMENTS": True}, environ={}).prepare
    assert not conf.load({}, environ={"PGQUEUE_PREPARE_STATEMENTS": "off"}).prepare
    assert conf.load({}, environ={"PGQUEUE_PREPARE_STATEMENTS": "none"}).PREPARE_STATEMENTS is None
    assert conf.load({"MAINTENANCE_SECONDS": 3}, environ={}).lead_seconds == 12.0
    assert conf.load({"LEADER_SECONDS": 2.5, "MAINTENANCE_SECONDS": 1}, environ={}).lead_seconds == 2.5


def test_counts_read_as_english() -> None:
    from pgqueue.text import counted

    assert [counted(n, "running job") for n in (0, 1, 2)] == ["0 running jobs", "1 running job", "2 running jobs"]
    assert counted(1, "batch", "batches") == "1 batch" and counted(3, "batch", "batches") == "3 batches"
