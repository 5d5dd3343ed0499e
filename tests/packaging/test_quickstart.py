"""What a new user gets: the sdist and the wheel hold every file the package and the docs need, the package
index page shows no broken image, and docs/quickstart.md, followed literally in a fresh virtualenv and a new
`startproject`, ends with a job enqueued by a view and run by a worker. The quickstart's own blocks drive
the test (files, settings, commands and their printed output), so the tutorial cannot drift from it."""

from __future__ import annotations

import email.parser
import http.cookiejar
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import tarfile
import time
import tomllib
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import environ
import psycopg
import pytest
from psycopg import sql

from tests.conftest import ROOT, wait_for

pytestmark = pytest.mark.packaging

QUICKSTART = ROOT / "docs" / "quickstart.md"
CHECKOUT = "/path/to/pgqueue-checkout"  # the quickstart's placeholders
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```$", re.M | re.S)
SIGNUP = {"username": "ada", "email": "ada@example.com"}


# -- the quickstart, read as steps ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Command:
    line: str  # as printed after the `$ ` prompt
    output: tuple[str, ...]  # the lines the quickstart shows it printing


@dataclass(frozen=True)
class File:
    path: str  # from the project folder, as named on the block's first line
    text: str


def steps() -> list[Command | File]:
    """The code blocks of sections 1 to 6 in order (the rest needs an interactive shell): each `$ ` line of a
    console block with the lines it prints, and each file block under its `# path` (or `<!-- path -->`) line."""
    text = QUICKSTART.read_text()
    text = text[text.index("## 1. Install"):text.index("## 7. ")]
    found: list[Command | File] = []
    for language, body in BLOCK.findall(text):
        if language == "console":
            for chunk in re.split(r"^\$ ", body, flags=re.M)[1:]:
                line, *output = chunk.strip().splitlines()
                found.append(Command(line.split("  # ")[0].strip(), tuple(output)))
        elif language in ("python", "html"):
            first, _, rest = body.partition("\n")
            path = re.fullmatch(r"# (\S+)|<!-- (\S+) -->", first)
            assert path, f"a {language} block of the quickstart does not start with its file's path: {first!r}"
            found.append(File(path.group(1) or path.group(2), rest))
        else:
            assert language == "pycon", f"the quickstart has a {language or 'plain'} block this test cannot follow"
    return found


def command(prefix: str) -> str:
    lines = [s.line for s in steps() if isinstance(s, Command) and s.line.startswith(prefix)]
    assert len(lines) == 1, f"the quickstart should say `{prefix} ...` once: {lines}"
    return lines[0]


def settings_lines(block: str, database: dict[str, str]) -> str:
    """A settings block as lines to append to settings.py: a later assignment wins, as if edited in place;
    `# ...` in a list stands for what the setting already holds; DATABASES gets the test's server."""
    lines = []
    name = ""
    for line in block.splitlines():
        if match := re.match(r"(\w+) = ", line):
            name = match.group(1)
        lines.append(line.replace("# ...", f"*{name},") if line.strip() == "# ..." else line)
    text = "\n".join(lines)
    if re.search(r"^DATABASES = ", text, re.M):
        keys = "|".join(database)
        text, replaced = re.subn(rf'"({keys})": "[^"]*"', lambda m: f'"{m[1]}": {database[m[1]]!r}', text)
        assert replaced == len(database), f"the quickstart's DATABASES should set {sorted(database)}: {block}"
    return f"\n{text}\n"


# -- the built distributions ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Dist:
    sdist: Path
    wheel: Path


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Dist:
    """The quickstart's build command run on the checkout (with this environment's `build`), into a temporary
    folder instead of the checkout's dist/. `build` makes the sdist, then the wheel from the sdist."""
    out = tmp_path_factory.mktemp("dist")
    argv = shlex.split(command("python -m build").replace(CHECKOUT, str(ROOT)))
    assert argv[:3] == ["python", "-m", "build"], argv
    done = subprocess.run([sys.executable, *argv[1:], "--outdir", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    sdists, wheels = list(out.glob("*.tar.gz")), list(out.glob("*.whl"))
    assert len(sdists) == 1 and len(wheels) == 1, sorted(out.iterdir())
    return Dist(sdists[0], wheels[0])


def package_files() -> set[str]:
    """Every file of the package in the checkout: modules, migrations, SQL, templates, py.typed."""
    files = {p.relative_to(ROOT).as_posix() for p in (ROOT / "pgqueue").rglob("*") if p.is_file()}
    return {f for f in files if "__pycache__" not in f and not f.endswith(".pyc")}


def test_the_checkout_has_what_the_distributions_must_ship() -> None:
    """The globs below find the kinds of files the issue named (else the other tests would prove nothing)."""
    files = package_files()
    for wanted in ("pgqueue/migrations/0001_initial.py", "pgqueue/py.typed", "pgqueue/sql/__init__.py"):
        assert wanted in files
    assert len([f for f in files if f.startswith("pgqueue/migrations/")]) >= 20
    assert any(f.startswith("pgqueue/sql/") and f.endswith(".sql") for f in files)
    assert any(f.startswith("pgqueue/templates/") and f.endswith(".html") for f in files)


def test_the_wheel_holds_the_whole_package_and_the_license(dist: Dist) -> None:
    with zipfile.ZipFile(dist.wheel) as wheel:
        names = set(wheel.namelist())
    missing = package_files() - names
    assert not missing, f"{dist.wheel.name} lacks {sorted(missing)}"
    info = f"pgqueue_django-{VERSION}.dist-info"
    assert f"{info}/licenses/LICENSE" in names
    assert not [n for n in names if n.startswith("tests/")], "the tests are not part of the package"


def test_the_sdist_holds_the_package_the_license_and_the_operator_files(dist: Dist) -> None:
    prefix = f"pgqueue_django-{VERSION}/"
    with tarfile.open(dist.sdist) as archive:
        names = {m.name.removeprefix(prefix) for m in archive.getmembers() if m.isfile()}
    docs = {p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").glob("*.md")}
    wanted = package_files() | docs | {"LICENSE", "README.md", "pyproject.toml", "MANIFEST.in", "docs/alerts.yml",
                                       "docs/grafana/pgqueue.json"}
    missing = wanted - names
    assert not missing, f"{dist.sdist.name} lacks {sorted(missing)}"


IMAGE = re.compile(r"!\[[^\]]*\]\(\s*<?([^\s)>]+)|<img\b[^>]*\bsrc\s*=\s*[\"']([^\"']+)", re.I)


def relative_images(markdown: str) -> list[str]:
    """The images a page shows from a path relative to itself: broken on a package index's page."""
    targets = [a or b for a, b in IMAGE.findall(markdown)]
    return [t for t in targets if not re.match(r"(https?:)?//|data:", t)]


def test_relative_images_finds_markdown_and_html_images() -> None:
    page = '![a](docs/a.png) ![b](https://x.org/b.png "t") <img alt="c" src="./c.png"> [link](docs/d.md)'
    assert relative_images(page) == ["docs/a.png", "./c.png"]


def test_the_package_index_page_shows_no_relative_image(dist: Dist) -> None:
    with zipfile.ZipFile(dist.wheel) as wheel:
        metadata = email.parser.Parser().parsestr(wheel.read(f"pgqueue_django-{VERSION}.dist-info/METADATA").decode())
    description = str(metadata.get_payload())
    assert metadata["Description-Content-Type"] == "text/markdown"
    assert description.startswith("# pgqueue"), "the long description is the README"
    assert relative_images(description) == []


def test_the_readme_installs_the_way_the_quickstart_does() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Add it to your project"):]
    section = section[:section.index("\n## ")]
    install = [s.line for s in steps() if isinstance(s, Command) and ("pip install" in s.line or " -m build" in s.line)]
    assert len(install) == 3 and install[-1].endswith('[binary]"'), install
    for line in install:
        assert line in section, f"the README's install section should say `{line}` as the quickstart does"


# -- the quickstart, followed ------------------------------------------------------------------------------------

@pytest.fixture
def database() -> Iterator[dict[str, str]]:
    """A new, empty database on the suite's server, as the quickstart's DATABASES values."""
    server = environ.Env.db_url_config(os.environ["DATABASE_URL"])
    values = {"NAME": f"test_{server['NAME']}_quickstart", "USER": server["USER"],
              "PASSWORD": server.get("PASSWORD", ""), "HOST": server["HOST"], "PORT": str(server["PORT"])}
    admin = psycopg.connect(host=values["HOST"], port=values["PORT"], user=values["USER"],
                            password=values["PASSWORD"], dbname="postgres", autocommit=True)
    name = sql.Identifier(values["NAME"])
    admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
    admin.execute(sql.SQL("CREATE DATABASE {}").format(name))
    yield values
    admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
    admin.close()


class Background:
    """A long-running command (the development server, the worker), its output in a file."""

    def __init__(self, argv: list[str], cwd: Path, env: dict[str, str], log: Path) -> None:
        self.log_path = log
        self.log: IO[str] = open(log, "w")
        self.proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def output(self) -> str:
        return self.log_path.read_text()

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.log.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sign_up(url: str) -> str:
    """What a browser does: load the form (and its CSRF cookie), post it back with the token."""
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    form = opener.open(url, timeout=10).read().decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form)
    assert token, f"the sign-up page has no CSRF token:\n{form}"
    data = urllib.parse.urlencode({"csrfmiddlewaretoken": token[1], **SIGNUP}).encode()
    return str(opener.open(url, data=data, timeout=10).read().decode())


def test_the_quickstart_followed_literally_runs_the_first_job(dist: Dist, database: dict[str, str],
                                                              tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    began = time.monotonic()
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    # A user's shell with the new virtualenv activated: nothing of this test suite's environment.
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "DJANGO_SETTINGS_MODULE", "DATABASE_URL", "PYTHONHOME") and not k.startswith("PGQUEUE_")}
    env.update(VIRTUAL_ENV=str(venv), PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", PYTHONUNBUFFERED="1")
    cwd = tmp_path
    port = free_port()
    server = worker = None
    started = 0.0
    try:
        for step in steps():
            if isinstance(step, File):
                path = cwd / step.path
                path.parent.mkdir(parents=True, exist_ok=True)
                if path.name == "settings.py":
                    with path.open("a") as settings:
                        settings.write(settings_lines(step.text, database))
                else:
                    path.write_text(step.text)
                continue
            if step.line == "python -m pip install build" or step.line.startswith("python -m build"):
                continue  # the `dist` fixture built the distributions with this environment's `build`
            line = step.line.replace(f"{CHECKOUT}/dist", str(dist.wheel.parent)).replace("<version>", VERSION)
            argv = shlex.split(line)
            if argv[0] == "cd":
                cwd = cwd / argv[1]
                continue
            if line == "python manage.py runserver":
                server = Background([*argv, f"127.0.0.1:{port}"], cwd, env, tmp_path / "runserver.log")
                continue
            if line.startswith("python manage.py pgqueue_worker"):
                worker = Background(argv, cwd, env, tmp_path / "worker.log")
                continue
            if line.startswith("django-admin startproject"):
                started = time.monotonic()
            done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
            printed = done.stdout + done.stderr
            assert done.returncode == 0, f"`{line}` failed:\n{printed}"
            for expected in step.output:
                assert expected in printed, f"`{line}` should print {expected!r}:\n{printed}"
            if line.startswith("python -m pip install"):
                where = subprocess.run(["python", "-c", "import pgqueue; print(pgqueue.__file__)"], cwd=tmp_path,
                                       env=env, capture_output=True, text=True, check=True).stdout
                assert where.startswith(str(venv)), f"pgqueue should come from the installed wheel, not {where}"

        assert started and server and worker, "the quickstart should start a project, the server and a worker"
        url = f"http://127.0.0.1:{port}/signup/"

        def serving() -> bool:
            assert server.proc.poll() is None, f"runserver exited:\n{server.output()}"
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    return True
            except OSError:
                return False

        wait_for(serving, timeout=30, what="the development server")
        answer = sign_up(url)
        queued = re.fullmatch(r"Welcome mail queued as job (\d+)", answer)
        assert queued, f"the sign-up answered {answer!r}"

        with psycopg.connect(host=database["HOST"], port=database["PORT"], user=database["USER"],
                             password=database["PASSWORD"], dbname=database["NAME"], autocommit=True) as conn:
            def state() -> str:
                assert worker.proc.poll() is None, f"the worker exited:\n{worker.output()}"
                row = conn.execute("SELECT state FROM pgqueue_job WHERE id = %s", [int(queued[1])]).fetchone()
                assert row, f"no job {queued[1]}"
                return str(row[0])

            deadline = time.monotonic() + 60
            while (now := state()) in ("ready", "running"):  # not yet attempted, or its attempt not over
                assert time.monotonic() < deadline, f"job {queued[1]} is {now} after 60 s:\n{worker.output()}"
                time.sleep(0.05)
            assert now == "succeeded", f"job {queued[1]}'s first attempt left it {now}:\n{worker.output()}"
        took = time.monotonic() - started

        printed = worker.output()
        for mail in ("Subject: Welcome", f"To: {SIGNUP['email']}", f"Hello {SIGNUP['username']}!"):
            assert mail in printed, f"the worker's console should show the mail ({mail!r}):\n{printed}"
        assert re.search(rf"job {queued[1]} myapp\.jobs\.send_welcome attempt 1 on queue default: succeeded in ",
                         printed), printed

        worker.proc.send_signal(signal.SIGTERM)
        assert worker.proc.wait(30) == 0, f"the worker should exit 0 on SIGTERM:\n{worker.output()}"
        with capsys.disabled():
            print(f"\nquickstart: {took:.1f} s from startproject to the first succeeded job "
                  f"({time.monotonic() - began:.1f} s with the virtualenv and the install)")
    finally:
        for process in (worker, server):
            if process:
                process.kill()
