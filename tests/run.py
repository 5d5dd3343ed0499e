#!/usr/bin/env python3
"""Run pgqueue's whole test suite from a fresh checkout: `python3 tests/run.py [pytest args]`.

Creates .venv with tox, then runs tox: Django 5.2 on Python 3.11 (everything) and Django 6.1 on Python 3.12
(found on PATH or in pyenv; everything that depends on Django), the django.tasks tests on Django 6.0 too,
plus ruff and mypy. PostgreSQL: DATABASE_URL if set, else an embedded PostgreSQL 18
started in .pgdata/ (stopped again when the tests end). Standard library only.
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"


def run(*cmd: str | Path, **kwargs: object) -> int:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    return subprocess.call([str(c) for c in cmd], cwd=ROOT, **kwargs)  # type: ignore[arg-type]


def main(args: list[str]) -> int:
    python = VENV / "bin" / "python"
    if not python.exists() and run(sys.executable, "-m", "venv", VENV):
        return 1
    if run(python, "-m", "pip", "install", "-q", "--disable-pip-version-check", "tox>=4.11"):
        return 1
    env = dict(os.environ)
    # Make pyenv's interpreters visible to tox when they are not on PATH.
    pyenv_root = os.environ.get("PYENV_ROOT", str(Path.home() / ".pyenv"))
    extra = sorted(glob.glob(f"{pyenv_root}/versions/3.1[1-9]*/bin"), reverse=True)
    env["PATH"] = os.pathsep.join([*extra, env.get("PATH", "")])
    envs = env.pop("PGQUEUE_TOX_ENVS", "lint,py311-django52,py312-django6,py312-django60")
    return run(python, "-m", "tox", "run", "-e", envs, "--", *args, env=env)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
