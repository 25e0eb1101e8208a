"""docs/tutorial.md, run as a reader would: every code block, in order, in a new project.

The HTML comment before each block says what to do with it:

- ``run: shell``: run it with bash in the project directory;
- ``run: background``: start it (a worker) as the reader's second terminal does,
  after stopping the previous one with SIGINT, as Ctrl-C would;
- ``run: write PATH`` / ``run: append PATH``: write the block to a file, or add it at the end;
- ``run: installed``: the install step: what it installs must be importable here;
- ``run: pycon``: the lines typed into ``manage.py shell``, checked as a doctest;
  with ``until-it-passes`` it is checked again until it passes (a worker is busy).

The project gets a database of its own; ``pip install`` runs with no index, so it
checks that the environment has what the tutorial installs, and downloads nothing.
"""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.db import connection
from psycopg import sql

from tests.conftest import ROOT, maintenance_connection

TUTORIAL = ROOT / "docs" / "tutorial.md"
BLOCK = re.compile(
    r"<!-- run: (?P<directive>[^>]+?) -->\n```(?P<lang>\w+)\n(?P<code>.*?)^```", re.M | re.S
)
FENCE = re.compile(r"^```\w", re.M)

DOCTEST = textwrap.dedent(
    """
    import doctest, os, sys
    sys.path.insert(0, os.getcwd())
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
    import django
    django.setup()
    test = doctest.DocTestParser().get_doctest(sys.stdin.read(), {}, "tutorial", "tutorial.md", 0)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    runner.run(test)
    sys.exit(1 if runner.failures else 0)
    """
)

ADMIN_CHECK = textwrap.dedent(
    """
    import os, sys
    sys.path.insert(0, os.getcwd())
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
    import django
    django.setup()
    from django.test import Client
    from django_pgjobs import Job
    client = Client(SERVER_NAME="localhost")
    assert client.login(username="admin", password="admin")
    job = Job.objects.get(kwargs__order_id=2)
    listing = client.get("/admin/pgjobs/job/").content.decode()
    page = client.get(f"/admin/pgjobs/job/{job.pk}/change/").content.decode()
    assert "price_per_item" in listing, listing
    assert "ZeroDivisionError" in page, page
    """
)


@dataclass
class Block:
    directive: str
    lang: str
    code: str

    @property
    def kind(self) -> str:
        return self.directive.split()[0]

    @property
    def argument(self) -> str:
        return self.directive.split()[1]


def blocks() -> list[Block]:
    text = TUTORIAL.read_text()
    found = [Block(**m.groupdict()) for m in BLOCK.finditer(text)]
    assert len(found) == len(FENCE.findall(text)), "a code block has no <!-- run: ... --> comment"
    return found


class Reader:
    """Someone following the tutorial in ``project``, with a terminal or two."""

    def __init__(self, project: Path, env: dict[str, str]) -> None:
        self.project = project
        self.env = env
        self.background: subprocess.Popen | None = None
        self.logs: list[Path] = []

    def do(self, block: Block) -> None:
        action = {
            "shell": self.shell,
            "background": self.start_background,
            "write": self.write,
            "append": self.append,
            "pycon": self.pycon,
            "installed": self.installed,
        }[block.kind]
        action(block)

    def shell(self, block: Block) -> None:
        done = self.run(["bash", "-euo", "pipefail", "-c", block.code])
        assert done.returncode == 0, f"{block.code}\n{done.stdout}"

    def installed(self, block: Block) -> None:
        """The install step, from a clone: not run here (it would replace this
        environment's editable install); what it installs must be importable.
        tests/test_first_contact.py installs the built wheel in a fresh venv."""
        done = self.run([sys.executable, "-c", "import django_pgjobs, psycopg, django"])
        assert done.returncode == 0, done.stdout

    def write(self, block: Block) -> None:
        (self.project / block.argument).write_text(block.code)

    def append(self, block: Block) -> None:
        with (self.project / block.argument).open("a") as file:
            file.write("\n\n" + block.code)

    def pycon(self, block: Block) -> None:
        deadline = time.monotonic() + (30 if "until-it-passes" in block.directive else 0)
        while True:
            done = self.run([sys.executable, "-c", DOCTEST], stdin=block.code)
            if done.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{block.code}\n{done.stdout}\n{self.background_log()}")
            time.sleep(0.2)

    def start_background(self, block: Block) -> None:
        self.stop_background()
        log = self.project / f"background-{len(self.logs)}.log"
        self.logs.append(log)
        self.background = subprocess.Popen(
            ["bash", "-c", f"exec {block.code}"],
            cwd=self.project,
            env=self.env,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )

    def stop_background(self, check: bool = True) -> None:
        if self.background is None:
            return
        self.background.send_signal(signal.SIGINT)  # Ctrl-C
        try:
            code = self.background.wait(30)
        except subprocess.TimeoutExpired:
            self.background.kill()
            raise
        finally:
            self.background = None
        if check:
            assert code == 0, f"the background command exited {code}\n{self.background_log()}"

    def background_log(self) -> str:
        return self.logs[-1].read_text(errors="replace") if self.logs else ""

    def run(self, command: list[str], stdin: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            command,
            cwd=self.project,
            env=self.env,
            input=stdin,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=120,
        )


@pytest.fixture
def tutorial_database(transactional_db: None) -> Iterator[dict[str, str]]:
    """A database of the tutorial's own, and the PG* variables that point at it."""
    settings = connection.settings_dict
    name = f"{settings['NAME']}_tutorial"
    admin = maintenance_connection(settings)
    drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
    admin.execute(drop)
    admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    env = {"PGDATABASE": name}
    for key, variable in [
        ("HOST", "PGHOST"),
        ("PORT", "PGPORT"),
        ("USER", "PGUSER"),
        ("PASSWORD", "PGPASSWORD"),
    ]:
        if settings[key]:
            env[variable] = str(settings[key])
    try:
        yield env
    finally:
        admin.execute(drop)
        admin.close()


@pytest.mark.slow
def test_every_block_of_the_tutorial_works_in_order(tmp_path, tutorial_database):
    project = tmp_path / "mysite"
    project.mkdir()
    bin_dir = str(Path(sys.executable).parent)
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PG", "DJANGO_", "DATABASE_URL"))
    }
    env |= tutorial_database | {
        "PATH": f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
        "PIP_NO_INDEX": "1",  # install nothing: what the tutorial installs must be here
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    reader = Reader(project, env)
    try:
        for block in blocks():
            reader.do(block)
        reader.stop_background()
    finally:
        reader.stop_background(check=False)

    # Step 6 shows the discarded job and its tracebacks in the admin (kept after the retry).
    if importlib.util.find_spec("django_pgjobs.admin") is None:
        warnings.warn("tutorial: admin step unchecked, django_pgjobs has no admin", stacklevel=1)
        return
    done = reader.run([sys.executable, "-c", ADMIN_CHECK])
    assert done.returncode == 0, done.stdout
