"""manage.py pgqueue_doctor: check the database side of pgqueue and say what to fix (pgqueue.doctor)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from pgqueue.ops import doctor


class Command(BaseCommand):
    help = ("Check pgqueue's database: migrations, indexes and the lease plan, bloat and autovacuum, expired "
            "leases, dead workers, long transactions, clock skew, LISTEN/NOTIFY. Exit status 1 on an error.")
    requires_system_checks: list[str] = []  # the doctor reports what the system checks would refuse

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="Print the checks as a JSON list.")
        parser.add_argument("--fail-on-warning", action="store_true", help="Exit with status 1 on a warning too.")

    def handle(self, *args: Any, json: bool, fail_on_warning: bool, **options: Any) -> None:
        checks = doctor.run_checks()
        self.stdout.write(doctor.to_json(checks) if json else doctor.format_table(checks))
        failing = doctor.failed(checks, warnings=fail_on_warning)
        if failing:
            names = ", ".join(f"{c.name} ({c.verdict.value})" for c in failing)
            raise CommandError(f"pgqueue_doctor: {len(failing)} check(s) failed: {names}", returncode=1)
