#!/usr/bin/env python3
"""Set up and start the example project: `python3 example_project/start.py [--port 8000]`.

Creates .venv and installs pgqueue with its dev extras, starts PostgreSQL (embedded in .pgdata/ unless
DATABASE_URL is set), applies migrations, creates the admin user, then runs a pgqueue worker supervisor
and the Django dev server until Ctrl-C. Standard library only until the venv exists.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
PYTHON = VENV / "bin" / "python"
ADMIN_USER, ADMIN_PASSWORD = "admin", "admin"


def bootstrap() -> None:
    """Make .venv with pgqueue[dev] installed (again only when pyproject.toml changed)."""
    if not PYTHON.exists():
        subprocess.check_call([sys.executable, "-m", "venv", str(VENV)])
    stamp = VENV / ".pgqueue-installed"
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if not stamp.exists() or stamp.read_text() != digest:
        print("Installing pgqueue and its dev dependencies into .venv ...", flush=True)
        subprocess.check_call([str(PYTHON), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                               "-e", f"{ROOT}[dev]"])
        stamp.write_text(digest)


def manage(*args: str) -> None:
    subprocess.check_call([str(PYTHON), str(ROOT / "manage.py"), *args], cwd=ROOT)


def serve(port: int) -> int:
    embedded = not os.environ.get("DATABASE_URL")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()  # starts the embedded PostgreSQL when DATABASE_URL is not set
    # settings put the embedded server's URL into DATABASE_URL, so the children below reuse it
    manage("migrate", "--noinput")
    manage("shell", "-c", (
        "from django.contrib.auth import get_user_model; U = get_user_model(); "
        f"U.objects.filter(username='{ADMIN_USER}').exists() or "
        f"U.objects.create_superuser('{ADMIN_USER}', 'admin@example.com', '{ADMIN_PASSWORD}')"
    ))
    worker = subprocess.Popen([str(PYTHON), str(ROOT / "manage.py"), "pgqueue_worker", "--processes", "2",
                               "--concurrency", "5", "--queues", "default,emails,reports"], cwd=ROOT)
    print(f"\n  Example shop:  http://127.0.0.1:{port}/\n  Admin:         http://127.0.0.1:{port}/admin/"
          f"  (user {ADMIN_USER!r}, password {ADMIN_PASSWORD!r})\n  Database:      {os.environ['DATABASE_URL']}\n"
          "  Stop with Ctrl-C.\n", flush=True)
    server = subprocess.Popen([str(PYTHON), str(ROOT / "manage.py"), "runserver", f"127.0.0.1:{port}",
                               "--noreload"], cwd=ROOT)
    try:
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
        return server.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        for proc in (server, worker):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in (server, worker):
            try:
                proc.wait(40)
            except subprocess.TimeoutExpired:
                proc.kill()
        if embedded:  # we started it; the data stays in .pgdata/ for next time
            from pgqueue import devdb

            devdb.stop(ROOT / ".pgdata")
            print("Stopped the embedded PostgreSQL (data kept in .pgdata/).", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--inside-venv", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not args.inside_venv:
        bootstrap()
        os.execv(str(PYTHON), [str(PYTHON), __file__, "--port", str(args.port), "--inside-venv"])
    return serve(args.port)


if __name__ == "__main__":
    raise SystemExit(main())
