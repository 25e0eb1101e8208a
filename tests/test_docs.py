"""The reference pages say what the code does: each table is checked against its source."""

from __future__ import annotations

import re

import pytest
from django.core.management import load_command_class
from django.dispatch import Signal

from django_pgjobs import conf, signals
from django_pgjobs.bridge import status_of
from django_pgjobs.states import ALLOWED, JobState
from tests.conftest import ROOT

DOCS = ROOT / "docs"


def table_rows(page: str) -> list[list[str]]:
    """The cells of every Markdown table row of ``page``, header rows included."""
    rows = []
    for line in (DOCS / page).read_text().splitlines():
        if line.startswith("|") and not set(line) <= set("|- "):
            rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def names_in(cell: str) -> list[str]:
    """`a`, b (note) -> ["a", "b"]"""
    return [re.sub(r"\(.*?\)", "", part).strip(" `") for part in cell.split(",")]


def test_every_setting_is_in_the_settings_reference():
    documented = {row[0].strip("`") for row in table_rows("reference/settings.md")}
    assert set(conf.DEFAULTS) - documented == set()


def test_the_state_machine_page_lists_exactly_the_allowed_transitions():
    documented: dict[str, set[str]] = {}
    for sources, targets in table_rows("states.md")[1:]:
        for source in names_in(sources):
            documented[source] = set(names_in(targets))
    assert documented == {str(s): {str(t) for t in targets} for s, targets in ALLOWED.items()}


def test_the_states_reference_lists_every_state():
    documented = [row[0].strip("`") for row in table_rows("reference/states.md")[1:9]]
    assert documented == [str(state) for state in JobState]


def test_the_status_mapping_of_the_backend_reference_is_the_one_in_use():
    rows = [row for row in table_rows("reference/django-tasks.md") if len(row) == 2]
    documented = {
        row[0].strip("`"): row[1].strip("`") for row in rows if row[0].strip("`") in JobState
    }
    assert documented == {str(state): str(status_of(state)) for state in JobState}


#: Options every management command has; the reference leaves them to Django's docs.
DJANGO_OPTIONS = {
    "--help",
    "--version",
    "--verbosity",
    "--settings",
    "--pythonpath",
    "--traceback",
    "--no-color",
    "--force-color",
    "--skip-checks",
}


@pytest.mark.parametrize("command", ["runworker", "stopworker", "runscheduler"])
def test_every_command_option_is_in_the_commands_reference(command):
    parser = load_command_class("django_pgjobs", command).create_parser("manage.py", command)
    options = {
        option
        for action in parser._actions
        for option in action.option_strings
        if option.startswith("--") and option not in DJANGO_OPTIONS
    }
    section = (DOCS / "reference/commands.md").read_text().split(f"## `{command}`")[1]
    section = section.split("\n## ")[0]
    assert {option for option in options if f"`{option}" not in section} == set()


def test_every_signal_is_in_the_signals_reference():
    declared = {name for name, value in vars(signals).items() if isinstance(value, Signal)}
    documented = {row[0].strip("`") for row in table_rows("reference/signals.md")}
    assert declared - documented == set()


def test_every_pgjobs_subcommand_and_option_is_in_the_operations_page():
    import argparse

    parser = load_command_class("django_pgjobs", "pgjobs").create_parser("manage.py", "pgjobs")
    (subparsers,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    page = (DOCS / "operations.md").read_text()
    missing = []
    for name, subparser in subparsers.choices.items():
        if f"`{name}" not in page:
            missing.append(name)
        for action in subparser._actions:
            missing += [
                o
                for o in action.option_strings
                if o.startswith("--") and o not in DJANGO_OPTIONS and f"`{o}" not in page
            ]
    assert missing == []


def test_no_page_repeats_a_heading():
    # A repeated heading gets an anchor with a _1 suffix that mkdocs --strict accepts:
    # links meant for the second one land on the first (scheduling.md had one twice).
    repeated = []
    for page in [*sorted(DOCS.rglob("*.md")), ROOT / "README.md"]:
        seen: set[str] = set()
        in_code = False
        for line in page.read_text().splitlines():
            if line.lstrip().startswith("```"):
                in_code = not in_code
            elif not in_code and re.match(r"#{1,6} ", line):
                if line in seen:
                    repeated.append(f"{page.relative_to(ROOT)}: {line}")
                seen.add(line)
    assert repeated == []


def test_each_install_line_of_an_extra_names_what_pip_can_find():
    # pgjobs is installed from a clone: `pip install "django-pgjobs[prometheus]"`, as
    # the metrics page and runworker's error said, found no such distribution.
    from django_pgjobs import metrics, tracing
    from tests.conftest import optional_dependencies

    pages = [ROOT / "README.md", *DOCS.rglob("*.md")]
    bare = re.compile(r"""pip install ["']?django-pgjobs\[""")
    assert [page.name for page in pages if bare.search(page.read_text())] == []
    extras = optional_dependencies()
    assert extras["prometheus"] == [metrics.REQUIREMENT]
    assert extras["opentelemetry"] == [tracing.REQUIREMENT]
    said = {page.name: " ".join(page.read_text().split()) for page in pages}
    assert f'pip install "{metrics.REQUIREMENT}"' in said["operations.md"]
    assert f'pip install "{tracing.REQUIREMENT}"' in said["operations.md"]
    assert f'pip install "{extras["pydantic"][0]}"' in said["typed-arguments.md"]
