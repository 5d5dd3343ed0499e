"""Recurring jobs: schedules declared in PGQUEUE["SCHEDULES"] or with @schedule, their ticks computed with
croniter in their own time zone, each tick enqueued once across any number of schedulers (a unique
(schedule, tick) row decides, not a leader's memory); run now, enable, disable (docs/schedules.md)."""

from __future__ import annotations

import datetime as dt
import logging
import zoneinfo
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from croniter import croniter
from django.db import transaction

from pgqueue import db, sql
from pgqueue.conf import Settings, get_settings
from pgqueue.enqueuing import registry
from pgqueue.enqueuing.decorator import JobFunction
from pgqueue.enqueuing.insert import enqueue_calls
from pgqueue.enqueuing.options import JobCall
from pgqueue.enqueuing.rows import to_json
from pgqueue.exceptions import InvalidJob
from pgqueue.payload import dumps
from pgqueue.text import short_repr, text_problem

logger = logging.getLogger("pgqueue.scheduler")

NAME_MAX = 200  # the schedule name column's length
CATCH_UP_MAX = 1_000  # missed ticks enqueued at most, per schedule and round, when catching up


@dataclass(frozen=True, slots=True, kw_only=True)
class ScheduleSpec:
    """A declared schedule, checked."""

    name: str
    task: str
    cron: str
    timezone: str = "UTC"
    args: tuple[Any, ...] = ()
    kwargs: tuple[tuple[str, Any], ...] = ()
    catch_up: bool = False


_decorated: dict[str, ScheduleSpec] = {}


# croniter's @ aliases, written out (the tick rules read the hour field).
ALIASES = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *", "@weekly": "0 0 * * 0",
           "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *"}


def schedule(cron: str, *, name: str | None = None, timezone: str = "UTC", args: Iterable[Any] = (),
             kwargs: dict[str, Any] | None = None, catch_up: bool = False) -> Callable[[Any], Any]:
    """Run a @job on a croniter schedule: @schedule("0 3 * * *", timezone="Europe/Paris") above @job.
    Six fields put seconds last ("* * * * * */10": every 10 s). catch_up=True enqueues every tick missed
    while no scheduler ran (else only the latest one)."""

    def register(fn: Any) -> Any:
        if not isinstance(fn, JobFunction):
            raise InvalidJob(f"@schedule goes above @job (it schedules a registered job), got {fn!r:.80}.")
        spec = check(name or fn.name, {"task": fn.name, "cron": cron, "timezone": timezone, "args": list(args),
                                        "kwargs": dict(kwargs or {}), "catch_up": catch_up}, job=fn)
        if spec.name in _decorated and _decorated[spec.name] != spec:
            raise InvalidJob(f"Schedule {spec.name!r} is declared twice with @schedule; give each a name=.")
        _decorated[spec.name] = spec
        return fn

    return register


def check(name: Any, entry: dict[str, Any], *, job: Any = None) -> ScheduleSpec:
    """A schedule entry (settings' or @schedule's) checked: InvalidJob with the exact problem."""
    if not isinstance(name, str) or not name or len(name) > NAME_MAX or text_problem(name):
        raise InvalidJob(f"A schedule name must be a string of 1 to {NAME_MAX} printable characters, "
                         f"got {short_repr(name)}.")
    label = f"Schedule {name!r}:"
    cron = entry.get("cron")
    if isinstance(cron, str):
        cron = ALIASES.get(cron.strip().lower(), cron)
    if not isinstance(cron, str) or len(cron.split()) not in (5, 6) or not croniter.is_valid(cron):
        raise InvalidJob(f"{label} {short_repr(entry.get('cron'))} is not a valid cron expression (5 fields, or "
                         "6 with seconds last: '*/5 * * * *', '0 3 * * mon', '* * * * * */10'; or @daily, "
                         "@hourly, ...).")
    zone = entry.get("timezone", "UTC")
    try:
        tz = zoneinfo.ZoneInfo(zone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, TypeError):
        raise InvalidJob(f"{label} unknown time zone {short_repr(zone)} (an IANA name: 'UTC', "
                         "'Europe/Paris').") from None
    try:  # valid fields can still name a day that never comes (February 30th, April 31st)
        croniter(cron, dt.datetime.now(tz)).get_next(dt.datetime)
    except Exception:
        raise InvalidJob(f"{label} {cron!r} never fires: no date matches it (a day the month never has, such "
                         "as February 30th or April 31st).") from None
    catch_up = entry.get("catch_up", False)
    if not isinstance(catch_up, bool):
        raise InvalidJob(f"{label} catch_up must be True or False, got {short_repr(catch_up)}.")
    args, kwargs = entry.get("args", []), entry.get("kwargs", {})
    if not isinstance(args, list | tuple):
        raise InvalidJob(f"{label} args must be a list, got {short_repr(args)}.")
    if not isinstance(kwargs, dict):
        raise InvalidJob(f"{label} kwargs must be a dict, got {short_repr(kwargs)}.")
    task = entry.get("task")
    if job is None:
        if not isinstance(task, str):
            raise InvalidJob(f"{label} task must be a job's dotted path, got {short_repr(task)}.")
        try:
            job = registry.get(task)
        except Exception as exc:
            raise InvalidJob(f"{label} task {task!r}: {exc}") from None
    try:
        JobCall(job=job, args=tuple(args), kwargs=dict(kwargs))
        job.check_arguments(tuple(args), dict(kwargs))
        to_json(list(args), job.name, "positional arguments")
        to_json(dict(kwargs), job.name, "keyword arguments")
    except InvalidJob as exc:
        raise InvalidJob(f"{label} {exc}") from None
    return ScheduleSpec(name=name, task=job.name, cron=cron, timezone=zone, args=tuple(args),
                        kwargs=tuple(sorted(kwargs.items())), catch_up=catch_up)


def declared(settings: Settings | None = None) -> list[ScheduleSpec]:
    """Every schedule: PGQUEUE["SCHEDULES"] and @schedule, checked (InvalidJob for the first problem)."""
    settings = settings or get_settings()
    specs = dict(_decorated)
    for name, entry in settings.SCHEDULES.items():
        if name in specs:
            raise InvalidJob(f"Schedule {name!r} is declared twice: in PGQUEUE['SCHEDULES'] and with @schedule.")
        specs[name] = check(name, entry)
    return [specs[n] for n in sorted(specs)]


def problems(settings: Settings | None = None) -> list[str]:
    """What is wrong with the declared schedules (the system check pgqueue.E005 reports each)."""
    settings = settings or get_settings()
    found = []
    for name, entry in settings.SCHEDULES.items():
        try:
            check(name, entry)
        except InvalidJob as exc:
            found.append(str(exc))
    duplicated = sorted(set(settings.SCHEDULES) & set(_decorated))
    found += [f"Schedule {n!r} is declared twice: in PGQUEUE['SCHEDULES'] and with @schedule." for n in duplicated]
    return found


# -- ticks (pure) --------------------------------------------------------------------------------------


def ticks_between(spec: ScheduleSpec, after: dt.datetime, until: dt.datetime, limit: int) -> list[dt.datetime]:
    """The schedule's ticks in (after, until], at most `limit` (the latest ones), in UTC. A local time
    that occurs twice when clocks go back runs once (at its first occurrence) for an expression with fixed
    hours (a daily job runs once), and each time for one whose hour field is a wildcard (an hourly job runs
    every real hour); a local time skipped when clocks go forward runs at the first time after it
    (croniter's rule). The walk starts at most `limit` ticks before `until`, so a long downtime costs no
    more than the ticks kept."""
    zone = zoneinfo.ZoneInfo(spec.timezone)
    fixed_hours = "*" not in spec.cron.split()[1]
    back = croniter(spec.cron, until.astimezone(zone) + dt.timedelta(microseconds=1))
    for _ in range(limit + 2):  # +2: a repeated hour skipped, and the tick at `until` itself
        start = back.get_prev(dt.datetime)
        if start <= after:
            break
    else:
        after = start - dt.timedelta(microseconds=1)
    found: list[dt.datetime] = []
    it = croniter(spec.cron, after.astimezone(zone))
    while True:
        tick = it.get_next(dt.datetime)
        if tick > until:
            return found[-limit:]
        if fixed_hours and tick.astimezone(zone).fold:
            continue  # the second time of a local time repeated when clocks went back: once is enough
        found.append(tick.astimezone(dt.UTC))


def next_tick(spec: ScheduleSpec, after: dt.datetime) -> dt.datetime:
    """The first tick after `after`, in UTC."""
    zone = zoneinfo.ZoneInfo(spec.timezone)
    following: dt.datetime = croniter(spec.cron, after.astimezone(zone)).get_next(dt.datetime)
    return following.astimezone(dt.UTC)


def due(spec: ScheduleSpec, last: dt.datetime, now: dt.datetime) -> list[dt.datetime]:
    """The ticks to enqueue now: those since `last` (every one when catching up, at most CATCH_UP_MAX:
    the latest; else only the latest one)."""
    return ticks_between(spec, last, now, CATCH_UP_MAX if spec.catch_up else 1)


# -- the scheduler's round, and an operator's run now --------------------------------------------------


def sync(specs: list[ScheduleSpec], alias: str) -> None:
    """Write the declared schedules' definitions (an operator's enabled switch and the ticks are kept)."""
    db.run_in_django(
        sql.schedule_sync_many, using=alias, names=[s.name for s in specs], tasks=[s.task for s in specs],
        crons=[s.cron for s in specs], timezones=[s.timezone for s in specs],
        args=[dumps(list(s.args)) for s in specs], kwargs=[dumps(dict(s.kwargs)) for s in specs],
        catch_ups=[s.catch_up for s in specs],
    )


_FAILING: set[str] = set()  # schedules whose ticks could not be computed, reported once per process


def run_due(specs: dict[str, ScheduleSpec], alias: str) -> float | None:
    """Enqueue the ticks that are due, each in its own transaction with its tick row (a tick another
    scheduler enqueued is skipped), and move each schedule on. Returns the seconds until the next tick
    (None if no schedule is enabled)."""
    names = sorted(specs)  # only the schedules this code declares (another version runs its own)
    for row in db.run_in_django(sql.schedule_due, using=alias, names=names):
        spec = specs[row.name]
        last = row.last_tick_at or row.created_at
        try:
            ticks = due(spec, last, row.now)
            after = next_tick(spec, row.now)
        except Exception:  # one schedule that cannot compute its ticks never stops the others
            if spec.name not in _FAILING:
                logger.exception("pgqueue cannot compute schedule %s's ticks (%r in %s); it is skipped until "
                                 "its definition changes, the other schedules go on", spec.name, spec.cron,
                                 spec.timezone)
                _FAILING.add(spec.name)
            continue
        for tick in ticks:
            try:
                _enqueue_tick(spec, tick, alias, manual=False)
            except Exception:
                logger.exception("pgqueue could not enqueue schedule %s's tick at %s; it moves on", spec.name, tick)
        db.run_in_django(sql.schedule_advance, using=alias, name=spec.name, last_tick=max(last, row.now),
                         next_tick=after)
    # a skipped schedule's next tick is never moved on: waiting for it would spin
    soonest = db.run_in_django(sql.schedule_soonest, using=alias, names=[n for n in names if n not in _FAILING])
    if not soonest or soonest[0].next_tick_at is None:
        return None
    now = soonest[0].now
    return max(0.0, float((soonest[0].next_tick_at - now).total_seconds()))


def _enqueue_tick(spec: ScheduleSpec, tick: dt.datetime | None, alias: str, *, manual: bool) -> int | None:
    """Enqueue one tick with its tick row, in one transaction; None if another scheduler had it."""
    with transaction.atomic(using=alias):
        taken = db.run_in_django(sql.schedule_tick_take, using=alias, name=spec.name, tick=tick, manual=manual)
        if not taken:
            return None
        handle = enqueue_calls([JobCall(job=registry.get(spec.task), args=spec.args, kwargs=dict(spec.kwargs))])[0]
        db.run_in_django(sql.schedule_tick_set_job, using=alias, id=taken[0].id, name=spec.name, job_id=handle.id)
    return handle.id


def run_now(names: list[str]) -> list[str]:
    """An operator's "run now": enqueue each schedule's job at once (a manual tick row), as its row
    describes it (the schedulers wrote it). Returns the names run; a schedule that is unknown, or whose job
    cannot be enqueued (logged), is left out."""
    from pgqueue.models import Schedule

    alias = get_settings().DATABASE
    done = []
    for row in Schedule.objects.using(alias).filter(name__in=names).order_by("name"):
        spec = ScheduleSpec(name=row.name, task=row.task, cron=row.cron, timezone=row.timezone,
                            args=tuple(row.args), kwargs=tuple(sorted(row.kwargs.items())), catch_up=row.catch_up)
        try:
            if _enqueue_tick(spec, None, alias, manual=True) is not None:
                done.append(row.name)
        except Exception:
            logger.exception("pgqueue could not run schedule %s now", row.name)
    return done


def set_enabled(names: list[str], enabled: bool) -> list[str]:
    """An operator's switch: disabled schedules enqueue nothing until enabled again (their missed ticks
    then follow catch_up). Returns the names changed."""
    return [row.name for row in db.run_in_django(sql.schedule_set_enabled, names=names, enabled=enabled)]
