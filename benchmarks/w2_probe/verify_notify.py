#!/usr/bin/env python
"""Checks that the probe's candidate paths still wake workers: a LISTEN connection must get one NOTIFY
'pgqueue' / 'bench' per committed ready enqueue, none for a rolled-back one, and the prepared path must keep
working after a rollback (psycopg sends DEALLOCATE ALL then; the statement is prepared again).

    cd /work/main && .tox/py311-django52/bin/python benchmarks/w2_probe/verify_notify.py
"""
import sys
from pathlib import Path

sys.argv = [sys.argv[0], "--skip-extras"]
sys.path.insert(0, str(Path(__file__).resolve().parent))
import probe  # noqa: E402  (snapshot of pgqueue 983427a, Django set up)
import psycopg  # noqa: E402
from django.db import connections, transaction  # noqa: E402

listener = psycopg.connect(**probe.DSN_KW, autocommit=True)
listener.execute("LISTEN pgqueue")


def drain() -> list[tuple[str, str]]:
    return [(n.channel, n.payload) for n in listener.notifies(timeout=0.5, stop_after=100)]


probe.reset()
drain()
for label, fn in (("E_head", lambda: probe.jobs.noop.enqueue()), ("E_fast", probe.make_fast(probe.execute_django)),
                  ("E_fast_rawcur", probe.make_fast(probe.execute_raw_client)),
                  ("E_fast_prep", probe.make_fast(probe.execute_raw_prepared)),
                  ("E_fast_prep_wrapped", probe.make_fast(probe.execute_wrapped_prepared))):
    handles = [fn() for _ in range(3)]
    got = drain()
    with transaction.atomic():
        fn()
        transaction.set_rollback(True)
    after_rollback = drain()
    handles.append(fn())  # after the ROLLBACK (psycopg: DEALLOCATE ALL if it had prepared statements)
    got_after = drain()
    raw = connections["default"].connection
    print(f"{label:20} ids {[h.id for h in handles]} notifies {got} | rolled back: {after_rollback} | "
          f"after rollback: {got_after} | prepared on the Django connection: "
          f"{raw.execute('SELECT name FROM pg_prepared_statements').fetchall()}")
    assert len(got) == 3 and all(g == ("pgqueue", "bench") for g in got), got
    assert after_rollback == [] and got_after == [("pgqueue", "bench")]
rows = probe.ADMIN.execute("SELECT state, count(*), bool_and(run_at <= now()) FROM pgqueue_job GROUP BY 1").fetchall()
print("rows:", rows)
print("OK")
