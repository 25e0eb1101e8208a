"""The deploy recipes under deploy/ (systemd units, Dockerfile, Kubernetes manifests):
well formed, running real management commands with real options, with stop grace
periods longer than the workers' shutdown timeout, and shown as they are in
docs/howto/deploy-workers.md."""

from __future__ import annotations

import configparser
import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.core.management import get_commands, load_command_class

from django_pgjobs import conf
from django_pgjobs.queues import NAME_CHARACTERS as QUEUE_NAME_CHARACTERS
from tests.conftest import ROOT

DEPLOY = ROOT / "deploy"
GUIDE = ROOT / "docs" / "howto" / "deploy-workers.md"
SHUTDOWN_TIMEOUT = conf.DEFAULTS["SHUTDOWN_TIMEOUT"]
MANIFESTS = sorted((DEPLOY / "k8s").glob("*.yaml"))
UNITS = sorted((DEPLOY / "systemd").glob("*.service"))
KINDS = {("apps/v1", "Deployment"), ("batch/v1", "Job")}
PROBE_PATHS = {"/livez", "/readyz", "/metrics"}


def check_manage_py(argv: list[str]) -> str:
    """Fail unless ``argv`` runs ``python manage.py COMMAND`` with options its parser
    accepts; the command's name."""
    assert Path(argv[0]).name.startswith("python") and argv[1] == "manage.py", argv
    name, args = argv[2], argv[3:]
    commands = get_commands()
    assert name in commands, f"no management command {name!r}"
    command = load_command_class(commands[name], name)
    command.create_parser("manage.py", name).parse_args(args)  # CommandError if wrong
    return name


def option(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv else None


def test_every_deploy_file_is_shown_as_it_is_in_the_guide():
    guide = GUIDE.read_text()
    files = [path for path in DEPLOY.rglob("*") if path.is_file()]
    assert len(files) == len(MANIFESTS) + len(UNITS) + 1  # and the Dockerfile
    for path in files:
        relative = path.relative_to(ROOT)
        assert path.read_text().strip() in guide, f"{relative} differs from the guide's copy"
        assert f"`{relative}`" in guide, f"the guide doesn't name {relative}"


# -- Kubernetes -----------------------------------------------------------------------------


def manifests() -> list[tuple[str, dict[str, Any]]]:
    return [(p.name, doc) for p in MANIFESTS for doc in yaml.safe_load_all(p.read_text()) if doc]


def check_container(container: dict[str, Any]) -> str:
    assert container["name"] and container["image"]
    command = check_manage_py(container["command"])
    ports = {port["name"]: port["containerPort"] for port in container.get("ports", [])}
    for kind in ("livenessProbe", "readinessProbe", "startupProbe"):
        probe = container.get(kind)
        if probe is None:
            continue
        if "exec" in probe:
            check_manage_py(probe["exec"]["command"])
        else:
            get = probe["httpGet"]
            assert get["path"] in PROBE_PATHS and get["port"] in ports, (kind, get)
            # The endpoints are those of runworker --metrics-port, on the port named.
            assert option(container["command"], "--metrics-port") == str(ports[get["port"]])
    return command


@pytest.mark.parametrize(
    "name, manifest", manifests(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_kubernetes_manifests_are_well_formed_and_run_real_commands(name, manifest):
    assert (manifest["apiVersion"], manifest["kind"]) in KINDS, name
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", manifest["metadata"]["name"])
    template = manifest["spec"]["template"]
    if manifest["kind"] == "Deployment":
        selected = manifest["spec"]["selector"]["matchLabels"].items()
        assert selected <= template["metadata"]["labels"].items(), "the selector misses its pods"
    else:
        assert template["spec"]["restartPolicy"] in ("Never", "OnFailure")
    pod = template["spec"]
    commands = [check_container(container) for container in pod["containers"]]
    if "runworker" in commands:
        # Running jobs get SHUTDOWN_TIMEOUT after SIGTERM; the kill must come later.
        assert pod["terminationGracePeriodSeconds"] > SHUTDOWN_TIMEOUT


def test_the_manifests_deploy_workers_the_scheduler_and_a_migration():
    found = {(doc["kind"], check_manage_py(c["command"])) for _, doc in manifests() for c in
             doc["spec"]["template"]["spec"]["containers"]}  # fmt: skip
    assert found == {
        ("Deployment", "runworker"),
        ("Deployment", "runscheduler"),
        ("Job", "migrate"),
    }


# -- systemd --------------------------------------------------------------------------------


# Keys of systemd.unit(5), systemd.service(5), systemd.exec(5) and systemd.kill(5) the
# units may use: where systemd-analyze is missing, a misspelt key still fails.
UNIT_KEYS = {
    "Unit": {"Description", "Documentation", "After", "Wants", "Requires"},
    "Service": {"Type", "User", "Group", "WorkingDirectory", "Environment", "EnvironmentFile"}
    | {"ExecStart", "KillSignal", "KillMode", "TimeoutStopSec", "Restart", "RestartSec"},
    "Install": {"WantedBy"},
}


def read_unit(path: Path) -> configparser.RawConfigParser:
    unit = configparser.RawConfigParser(strict=True, delimiters=("=",), comment_prefixes=("#",))
    unit.optionxform = str  # type: ignore[assignment,method-assign]  # keys keep their case
    unit.read_string(path.read_text())
    return unit


@pytest.mark.parametrize("path", UNITS, ids=lambda p: p.name)
def test_systemd_units_run_real_commands_and_stop_gracefully(path):
    unit = read_unit(path)
    assert set(unit.sections()) == {"Unit", "Service", "Install"}
    for section, keys in UNIT_KEYS.items():
        assert set(unit[section]) <= keys, f"unknown key in [{section}]"
    service = unit["Service"]
    argv = shlex.split(service["ExecStart"].replace("%i", "default"))
    command = check_manage_py(argv)
    assert service["KillSignal"] == "SIGTERM" and service["Restart"] == "on-failure"
    if command == "runworker":
        assert float(service["TimeoutStopSec"]) > SHUTDOWN_TIMEOUT
        assert service["KillMode"] == "mixed"  # the signal to runworker only, not twice


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="no systemd-analyze here")
def test_systemd_analyze_verifies_the_units(tmp_path):
    names = []
    for path in UNITS:
        text = path.read_text()
        # verify wants the program to exist: this interpreter stands in for the venv's.
        text = text.replace("/srv/mysite/.venv/bin/python", sys.executable)
        (tmp_path / path.name).write_text(text)
        names.append(str(tmp_path / path.name.replace("@.", "@default.")))
    result = subprocess.run(
        ["systemd-analyze", "verify", *names], capture_output=True, text=True, timeout=60
    )
    ours = [line for line in (result.stdout + result.stderr).splitlines() if "pgjobs" in line]
    assert result.returncode == 0 and not ours, result.stdout + result.stderr


def test_the_worker_template_passes_the_instance_name_to_queues_as_it_is():
    # %i, not %I: unescaping turns "-" into "/", and "high-priority" is a queue name.
    # Every character a queue name may hold is one a unit name may hold, so %i carries
    # any queue name unchanged; a list (a comma) can't be an instance name at all.
    (template,) = [path for path in UNITS if path.name.endswith("@.service")]
    exec_start = read_unit(template)["Service"]["ExecStart"]
    assert "--queues %i" in exec_start and "%I" not in exec_start
    assert QUEUE_NAME_CHARACTERS == "[A-Za-z0-9_.:-]"  # systemd.unit(5)'s, less "\\"
    if shutil.which("systemd-escape"):  # a comma needs escaping: %i would keep "\x2c"
        escaped = subprocess.run(
            ["systemd-escape", "default,mail"], capture_output=True, text=True, check=True
        )
        assert escaped.stdout.strip() == "default\\x2cmail"


# -- Dockerfile -----------------------------------------------------------------------------

INSTRUCTIONS = {"FROM", "ENV", "WORKDIR", "COPY", "RUN", "USER", "CMD", "EXPOSE", "ARG", "LABEL"}


def dockerfile() -> list[tuple[str, str]]:
    text = (DEPLOY / "Dockerfile").read_text()
    lines = [line for line in text.replace("\\\n", " ").splitlines() if line.strip()]
    instructions = [line.split(None, 1) for line in lines if not line.startswith("#")]
    return [(word, rest.strip()) for word, rest in instructions]


def test_the_dockerfile_is_well_formed_and_runs_a_real_command():
    instructions = dockerfile()
    assert instructions[0][0] == "FROM"
    assert {word for word, _ in instructions} <= INSTRUCTIONS
    for word, rest in instructions:
        if word == "RUN":
            assert shlex.split(rest)[0] in ("pip", "useradd"), rest
        if word == "USER":
            assert rest not in ("root", "0")
    (cmd,) = [rest for word, rest in instructions if word == "CMD"]
    # Exec form: the command is PID 1 and gets the container's SIGTERM itself.
    assert check_manage_py(json.loads(cmd)) == "runworker"
