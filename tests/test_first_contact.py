"""The first fifteen minutes of a new user, from the built package: the wheel and sdist
are whole, and a fresh ``startproject`` project gets jobs running as the README says.

The wheel is installed into a fresh virtualenv (its dependencies come from PyPI, or
pip's cache), kept under ~/.cache keyed by the wheel's contents, so a second run
reuses it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
import zipfile
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from django_pgjobs import __version__, db
from tests import conftest

# Alone: python -m pytest -m first_contact
pytestmark = [pytest.mark.slow, pytest.mark.first_contact]

ROOT = conftest.ROOT


def run(*args: str | Path, cwd: Path = ROOT, env: dict | None = None, timeout: float = 300):
    # A new user's shell: none of the test run's Django or database variables.
    clean = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DJANGO_", "PG", "DATABASE_URL", "PYTHONPATH"))
    }
    done = subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return done


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    built = run(sys.executable, "-m", "build", "--outdir", out, ROOT)
    assert built.returncode == 0, built.stdout + built.stderr
    return out


def wheel_of(dist: Path) -> Path:
    (wheel,) = dist.glob("*.whl")
    return wheel


def test_the_sdist_and_wheel_pass_twine_and_hold_every_file_the_package_reads(dist):
    checked = run(sys.executable, "-m", "twine", "check", "--strict", *dist.iterdir())
    assert checked.returncode == 0, checked.stdout + checked.stderr
    wheel = wheel_of(dist)
    assert wheel.name == f"django_pgjobs-{__version__}-py3-none-any.whl"
    names = set(zipfile.ZipFile(wheel).namelist())
    tracked = run("git", "ls-files", "django_pgjobs").stdout.split()
    assert tracked, "not a git checkout"
    # Everything but notes for developers (migrations/README.md) is read at runtime.
    missing = [path for path in tracked if path not in names and not path.endswith(".md")]
    assert not missing, missing
    assert f"django_pgjobs-{__version__}.dist-info/licenses/LICENSE" in names


@pytest.fixture(scope="module")
def fresh_venv(dist) -> Path:
    wheel = wheel_of(dist)
    # The wheel's RECORD lists every file's hash: the same contents, the same key
    # (the zip itself differs at every build, by its timestamps).
    with zipfile.ZipFile(wheel) as archive:
        record = next(n for n in archive.namelist() if n.endswith(".dist-info/RECORD"))
        key = hashlib.sha256(archive.read(record)).hexdigest()[:16]
    cache = Path.home() / ".cache" / "django-pgjobs-first-contact"
    for old in cache.glob("*"):
        if old.name != key:
            shutil.rmtree(old, ignore_errors=True)
    venv = cache / key
    python = venv / "bin" / "python"
    if not (venv / ".ready").exists():
        shutil.rmtree(venv, ignore_errors=True)
        made = run(sys.executable, "-m", "venv", venv)
        assert made.returncode == 0, made.stderr
        # What the README says to install, from the wheel instead of the clone.
        installed = run(python, "-m", "pip", "install", "-q", wheel, "psycopg[binary]")
        assert installed.returncode == 0, installed.stdout + installed.stderr
        (venv / ".ready").touch()
    return venv


SETTINGS = """
INSTALLED_APPS += ["django_pgjobs", "shop"]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ["PGDATABASE"],
        "HOST": os.environ.get("PGHOST", "127.0.0.1"),
        "PORT": os.environ.get("PGPORT", "5432"),
        "USER": os.environ.get("PGUSER", ""),
    }
} if os.environ.get("USE_POSTGRES") else DATABASES
ALLOWED_HOSTS = ["testserver"]
"""

TASKS = """
from django_pgjobs import task


@task
def send_welcome(user_id: int) -> str:
    return f"welcome, {user_id}"
"""

VIEWS = """
from django.http import JsonResponse

from .tasks import send_welcome


def signup(request):
    job = send_welcome.enqueue(42)
    return JsonResponse({"job": job.pk})
"""

URLS = """
from django.urls import path

from shop.views import signup

urlpatterns = [path("signup/", signup)]
"""

ENQUEUE = """
from django.test import Client
print("job", Client().get("/signup/").json()["job"])
"""

STATE = """
from django_pgjobs import Job
job = Job.objects.get()
print(job.state, job.result)
"""


@pytest.fixture
def project(tmp_path, fresh_venv) -> Path:
    bin_dir = fresh_venv / "bin"
    made = run(bin_dir / "django-admin", "startproject", "mysite", tmp_path)
    assert made.returncode == 0, made.stderr
    app = run(bin_dir / "python", "manage.py", "startapp", "shop", cwd=tmp_path)
    assert app.returncode == 0, app.stderr
    settings = tmp_path / "mysite" / "settings.py"
    settings.write_text("import os\n" + settings.read_text() + SETTINGS)
    (tmp_path / "shop" / "tasks.py").write_text(TASKS)
    (tmp_path / "shop" / "views.py").write_text(VIEWS)
    (tmp_path / "mysite" / "urls.py").write_text(URLS)
    return tmp_path


@pytest.fixture
def scratch_database(transactional_db) -> dict[str, str]:
    params = db.connection_params()
    name = f"{params['dbname']}_first_contact"
    with psycopg.connect(**{**params, "dbname": "postgres"}, autocommit=True) as admin:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield {
        "PGDATABASE": name,
        "PGHOST": params.get("host") or "127.0.0.1",
        "PGPORT": str(params.get("port") or 5432),
        "PGUSER": params.get("user") or "",
    }
    with psycopg.connect(**{**params, "dbname": "postgres"}, autocommit=True) as admin:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def test_a_fresh_project_runs_a_job_enqueued_in_a_view(project, fresh_venv, scratch_database):
    python = fresh_venv / "bin" / "python"
    env = {key: value for key, value in scratch_database.items() if value}
    env["USE_POSTGRES"] = "1"

    def manage(*args: str):
        return run(python, "manage.py", *args, cwd=project, env=env)

    for step in (("check",), ("migrate", "-v", "0")):
        done = manage(*step)
        assert done.returncode == 0, done.stdout + done.stderr
    enqueued = manage("shell", "-c", ENQUEUE)
    assert enqueued.returncode == 0, enqueued.stderr
    assert enqueued.stdout.splitlines()[-1].startswith("job "), enqueued.stdout
    worked = manage("runworker", "--burst")
    assert worked.returncode == 0, worked.stderr
    assert f"django-pgjobs {__version__} worker " in worked.stderr  # its start line
    assert " stopped after 1 attempt: 1 completed" in worked.stderr
    state = manage("shell", "-c", STATE)
    assert state.stdout.splitlines()[-1] == "completed welcome, 42", state.stdout + state.stderr


def test_the_same_project_on_sqlite_is_told_and_migrates_nothing(project, fresh_venv):
    python = fresh_venv / "bin" / "python"
    checked = run(python, "manage.py", "check", cwd=project)
    assert checked.returncode != 0
    assert "pgjobs.E042" in checked.stderr and "pgjobs needs PostgreSQL" in checked.stderr
    migrated = run(python, "manage.py", "migrate", cwd=project)
    assert migrated.returncode != 0 and "pgjobs.E042" in migrated.stderr
    database = project / "db.sqlite3"
    if database.exists():
        with sqlite3.connect(database) as conn:
            tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master")]
        assert not tables


def test_the_readme_shows_what_this_test_does():
    readme = (ROOT / "README.md").read_text()
    assert 'pip install ./django-pgjobs "psycopg[binary]"' in readme
    assert '"django_pgjobs"' in readme and '"ENGINE": "django.db.backends.postgresql"' in readme
    assert "python manage.py runworker --burst" in readme


def test_the_postgresql_versions_stated_are_the_djangos_own_minimums():
    # Django refuses a server older than its minimum on connecting: the docs must not
    # promise one (they once said 13, which neither Django 5.2 nor 6 accepts).
    import django
    from django.db import connection

    stated = {5: 14, 6: 15}
    assert connection.features.minimum_database_version == (stated[django.VERSION[0]],)
    index = " ".join((ROOT / "docs" / "index.md").read_text().split())
    assert "PostgreSQL 14 or later with Django 5.2, 15 or later with Django 6" in index
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert "PostgreSQL 14+ with Django 5.2, 15+ with Django 6" in readme
