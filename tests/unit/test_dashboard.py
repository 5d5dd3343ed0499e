"""docs/grafana/pgqueue.json and docs/alerts.yml name only metrics pgqueue exports, and use them the way
they must be used: gauges (read from the database, the same on every scrape target) deduplicated with
max, never summed; counters and histograms (per process) only under rate() or increase(). The alert rules
pass `promtool check rules` where Prometheus is installed. No database."""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

DOCS = Path(__file__).resolve().parents[2] / "docs"
DASHBOARD = DOCS / "grafana" / "pgqueue.json"
ALERTS = DOCS / "alerts.yml"
SEVERITIES = {"critical", "warning", "info"}
DURATION = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")
ROWS = ["Overview", "Latency", "Failures", "Flow control & outbox", "Database"]

STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
NAME = re.compile(r"(?<![\w:])pgqueue_[A-Za-z0-9_:]*")


# -- what pgqueue exports ----------------------------------------------------------------------------------

@cache
def event_families() -> dict[str, frozenset[str]]:
    """The counters and histograms: family name -> the sample names a scrape shows (_total, _bucket, ...)."""
    from prometheus_client import CollectorRegistry

    from pgqueue.ops import metrics

    created = metrics._create(CollectorRegistry())
    families: dict[str, frozenset[str]] = {}
    for field in dataclasses.fields(created):
        metric = getattr(created, field.name)
        labelnames = metric._labelnames
        if labelnames:  # a labelled metric shows no sample before its first child
            metric.labels(*("x",) * len(labelnames))
        for family in metric.collect():
            families[family.name] = frozenset(s.name for s in family.samples if not s.name.endswith("_created"))
    return families


@cache
def collected() -> dict[str, str]:
    """What the collectors yield (DatabaseCollector, MemoryCollector), read from their source: sample name ->
    "gauge" or "counter" (a counter read from the database, such as the job id sequence: the same on every
    target like a gauge, and read as a rate like a counter)."""
    from pgqueue.ops import metrics

    source = inspect.getsource(metrics.DatabaseCollector.collect) + inspect.getsource(metrics.MemoryCollector.collect)
    found = {name: "gauge" for name in re.findall(r'(?:GaugeMetricFamily|_gauge)\(\s*"(\w+)"', source)}
    found |= {f"{name}_total": "counter" for name in re.findall(r'CounterMetricFamily\(\s*"(\w+)"', source)}
    return found


def gauge_names() -> frozenset[str]:
    """Everything read from the database (or /proc) at scrape time: never summed across targets."""
    return frozenset(collected())


def counter_names() -> frozenset[str]:
    """Counters: the per-process ones and those read from the database: only under rate() or increase()."""
    read = frozenset(name for name, kind in collected().items() if kind == "counter")
    return frozenset().union(*event_families().values()) | read


def exported() -> frozenset[str]:
    return frozenset().union(*event_families().values()) | gauge_names()


def names_in(expr: str) -> set[str]:
    """The pgqueue_ metric names an expression uses (not label values such as table="pgqueue_job")."""
    return set(NAME.findall(STRING.sub('""', expr)))


# -- the files -----------------------------------------------------------------------------------------------

def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, with those inside collapsed rows; rows themselves excluded."""
    found = []
    for panel in board["panels"]:
        if panel["type"] == "row":
            found.extend(panel.get("panels", []))
        else:
            found.append(panel)
    return found


def dashboard_exprs() -> list[str]:
    board = dashboard()
    exprs = [t["expr"] for p in panels(board) for t in p.get("targets", []) if "expr" in t]
    for var in board["templating"]["list"]:
        if var["type"] == "query":
            query = var["query"]
            exprs.append(query["query"] if isinstance(query, dict) else query)
    return exprs


def alert_rules() -> list[dict[str, Any]]:
    rules = []
    for group in read_yaml(ALERTS.read_text())["groups"]:
        rules.extend(group["rules"])
    return rules


def every_expr() -> list[tuple[str, str]]:
    return [("dashboard", e) for e in dashboard_exprs()] + [(r["alert"], r["expr"]) for r in alert_rules()]


# -- alerts.yml is read with PyYAML (the dev extra), after the check Prometheus makes and PyYAML does not ---------

def read_yaml(text: str) -> Any:
    """The document; a mapping that names a key twice fails (Prometheus refuses it, PyYAML keeps the last)."""
    def check(node: yaml.Node) -> None:
        if isinstance(node, yaml.MappingNode):
            keys = [key.value for key, _ in node.value]
            twice = sorted({key for key in keys if keys.count(key) > 1})
            assert not twice, f"alerts.yml line {node.start_mark.line + 1}: {', '.join(twice)} twice"
            for key, value in node.value:
                check(key)
                check(value)
        elif isinstance(node, yaml.SequenceNode):
            for item in node.value:
                check(item)

    check(yaml.compose(text, Loader=yaml.SafeLoader))
    return yaml.safe_load(text)


# -- the tests ----------------------------------------------------------------------------------------------

def test_names_in_reads_metric_names_not_label_values() -> None:
    expr = 'sum(rate(pgqueue_a_total{table="pgqueue_job"}[5m])) / max(pgqueue_b{x=~\'pgqueue_c\'}) > 0'
    assert names_in(expr) == {"pgqueue_a_total", "pgqueue_b"}
    assert names_in("histogram_quantile(0.9, sum by (le) (rate(pgqueue_x_bucket[5m])))") == {"pgqueue_x_bucket"}


def test_exported_names_are_the_real_ones() -> None:
    names = exported()
    for name in ("pgqueue_jobs_total", "pgqueue_jobs_enqueued_total", "pgqueue_completions_refused_total",
                 "pgqueue_pickup_latency_seconds_bucket", "pgqueue_attempt_duration_seconds_sum",
                 "pgqueue_attempt_duration_seconds_count", "pgqueue_queue_jobs", "pgqueue_expired_leases",
                 "pgqueue_collector_duration_seconds"):
        assert name in names
    assert len(gauge_names()) >= 13  # the regex over DatabaseCollector.collect still finds them
    # what a dashboard must not name: unsuffixed counters, made-up names
    assert {"pgqueue_jobs", "pgqueue_jobs_enqueued", "pgqueue_pickup_latency_seconds", "pgqueue_nope"}.isdisjoint(names)


@pytest.mark.parametrize("source", ["dashboard", "alerts"])
def test_every_expression_names_only_exported_metrics(source: str) -> None:
    exprs = dashboard_exprs() if source == "dashboard" else [r["expr"] for r in alert_rules()]
    assert exprs
    unknown = {name: expr for expr in exprs for name in names_in(expr) - exported()}
    assert not unknown, f"{source} names metrics pgqueue does not export: {unknown}"


def test_every_expression_names_a_metric() -> None:
    for where, expr in every_expr():
        assert names_in(expr) or re.search(r"\bup\{", expr), f"{where}: {expr!r} names no pgqueue metric"


def test_gauges_are_never_summed_across_targets() -> None:
    gauges = "|".join(sorted(gauge_names()))
    summed = re.compile(rf"\b(?:sum|avg|count)\s*(?:(?:by|without)\s*\([^)]*\)\s*)?\(\s*({gauges})\b")
    for where, expr in every_expr():
        hit = summed.search(STRING.sub('""', expr))
        assert hit is None, f"{where}: {hit.group(1)} is the same on every target: max it, do not sum it: {expr!r}"


def test_counters_and_histograms_are_read_as_rates() -> None:
    counters = counter_names()
    assert "pgqueue_job_ids_issued_total" in counters and "pgqueue_jobs_total" in counters
    for where, expr in every_expr():
        plain = STRING.sub('""', expr)
        for match in NAME.finditer(plain):
            if match.group() in counters:
                before = plain[:match.start()]
                assert re.search(r"\b(?:rate|irate|increase)\(\s*$", before), (
                    f"{where}: {match.group()} is a counter: use it under rate() or increase(): {expr!r}")
                if match.group() in gauge_names():  # read from the database: every target has the same rate
                    assert re.search(r"\b(?:max|min)\s*(?:(?:by|without)\s*\([^)]*\)\s*)?\(\s*"
                                     r"(?:rate|irate|increase)\(\s*$", before), (
                        f"{where}: {match.group()} is the same on every target: max its rate, do not sum it: {expr!r}")


def test_dashboard_shows_every_metric() -> None:
    used = set().union(*(names_in(e) for e in dashboard_exprs()))
    missing = sorted(f for f, samples in event_families().items() if not samples & used)
    missing += sorted(gauge_names() - used)
    assert not missing, f"the dashboard shows nothing of {missing}"


def test_dashboard_structure() -> None:
    board = dashboard()
    assert board["title"] and board["uid"] and 36 <= board["schemaVersion"] <= 41
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert "queue" in variables and "datasource" in variables, sorted(variables)
    queue = variables["queue"]
    query = queue["query"]["query"] if isinstance(queue["query"], dict) else queue["query"]
    assert query == "label_values(pgqueue_queue_jobs, queue)"
    assert queue["multi"] and queue["includeAll"]
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    rows = [p["title"] for p in board["panels"] if p["type"] == "row"]
    assert rows == ROWS
    found = panels(board)
    assert 20 <= len(found) <= 32
    ids = [p["id"] for p in board["panels"]] + [p["id"] for p in found if p not in board["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in found:
        assert panel.get("title"), panel
        targets = panel.get("targets", [])
        assert targets and all(t.get("expr") and t.get("refId") for t in targets), panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
    assert any("$queue" in e for e in dashboard_exprs())


def test_alert_rules_are_complete() -> None:
    document = read_yaml(ALERTS.read_text())
    assert [g["name"] for g in document["groups"]] == ["pgqueue"]
    rules = alert_rules()
    assert 12 <= len(rules) <= 18
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names)), "alert names must be unique"
    for rule in rules:
        where = rule.get("alert")
        assert where and where.startswith("Pgqueue"), rule
        assert rule.get("expr", "").strip(), where
        assert DURATION.match(rule.get("for", "")), f"{where}: for: {rule.get('for')!r}"
        assert rule.get("labels", {}).get("severity") in SEVERITIES, where
        annotations = rule.get("annotations", {})
        assert annotations.get("summary") and annotations.get("description"), where
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, where
    told = " ".join(r["annotations"]["description"] for r in rules)
    assert "manage.py pgqueue_doctor" in told and "manage.py pgqueue_explain JOB_ID" in told


def test_alerts_cover_the_failure_modes() -> None:
    exprs = {r["alert"]: r["expr"] for r in alert_rules()}
    needed = ["pgqueue_queue_workers", "pgqueue_queue_lag_seconds", 'outcome="dead"', 'outcome="retried"',
              "pgqueue_expired_leases", 'kind="maintenance"', 'status!~"0|3"', "pgqueue_lease_rescues_total",
              "pgqueue_queue_breaker_open", "pgqueue_outbox_lag_seconds", "pgqueue_pickup_latency_seconds_bucket",
              "pgqueue_collector_duration_seconds", 'up{job=~"pgqueue']
    for text in needed:
        assert any(text in e for e in exprs.values()), f"no alert on {text}"


def test_yaml_reader_refuses_a_key_given_twice() -> None:
    assert read_yaml("a:\n  - b: 1\n    c: 2\n") == {"a": [{"b": 1, "c": 2}]}
    with pytest.raises(AssertionError, match="line 2: b twice"):
        read_yaml("a:\n  - b: 1\n    b: 2\n")


def test_promtool_accepts_the_alert_rules() -> None:
    if shutil.which("promtool") is None:
        if os.environ.get("PGQUEUE_REQUIRE_PROMTOOL") == "1":  # set by .ci/run, which unpacks it
            pytest.fail("promtool is not on PATH")
        pytest.skip("promtool (Prometheus) is not installed")
    done = subprocess.run(["promtool", "check", "rules", str(ALERTS)], capture_output=True, text=True)
    printed = done.stdout + done.stderr
    assert done.returncode == 0, printed
    assert f"SUCCESS: {len(alert_rules())} rules found" in printed, printed
