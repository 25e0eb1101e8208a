"""The ``command`` kind: run a configured executable as a child process.

Config: ``executable`` (a path, or a name looked up on PATH), ``args``,
``cwd``, ``env``, ``inherit_env`` (default: only PATH, HOME, LANG, TZ, TMPDIR
are passed on), ``timeout``, ``allow_job_args`` (let jobs append arguments),
``allow_job_input`` (let jobs send data to the program's stdin),
``max_output_bytes`` (the tail of stdout and of stderr that is kept),
``kill_grace``. Every secret is passed as an environment variable of the
same name, and its value is masked in the captured output.

The process runs inside the job: it counts against its queue's (and this
connector's) concurrency for as long as it lives. Cancelling the job, its
timeout, or a worker handing the job back kills the whole process group
(SIGTERM, then SIGKILL after ``kill_grace`` seconds), so no process outlives
its job.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import IO, Any

from ..context import current_job
from ..exceptions import JobCancelled
from ..limits import shown
from .base import ConnectorKind, Option, byte_count, seconds, secret_frames, str_dict, str_list
from .errors import ConnectorError, ConnectorRefused
from .registry import register_kind

logger = logging.getLogger(__name__)

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")
#: Variables passed on from the worker when inherit_env is off.
BASE_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "SYSTEMROOT")
#: How often the waiting job thread looks at cancellation and deadlines.
POLL_SECONDS = 0.05
#: Characters of stderr quoted in a failure's message.
STDERR_IN_ERROR = 2000


@dataclass
class CommandResult:
    exit_code: int
    stdout: str
    stderr: str
    pid: int
    seconds: float
    #: Output beyond max_output_bytes was dropped (the tail is kept).
    truncated: bool = False

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class CommandFailed(ConnectorError):
    """The process exited with a non-zero code (or was killed by a signal)."""

    def __init__(self, message: str, result: CommandResult) -> None:
        self.result = result
        super().__init__(message)


class CommandTimeout(ConnectorError):
    """The process ran past the connector's timeout and was killed."""


@dataclass
class RunningCommand:
    connector: str
    pid: int
    job_id: int | None
    started: float


#: Processes running now in this worker process, by pid.
_running: dict[int, RunningCommand] = {}
_running_lock = threading.Lock()


def running_commands() -> list[RunningCommand]:
    """The child processes this worker process is running for jobs now."""
    with _running_lock:
        return list(_running.values())


def _environment(env: dict[Any, Any]) -> str | None:
    """Strings, named as an environment can hold them: Popen refuses a name with "="
    (ValueError at every run) and drops an empty one."""
    problem = str_dict(env)
    if problem:
        return problem
    bad = [name for name in env if not name or "=" in name]
    return f"{shown(bad[0])} is not an environment variable name" if bad else None


def _nonempty(value: str) -> str | None:
    return None if value.strip() else "is required"


class _Tail:
    """Reads a pipe to its end on a thread, keeping the last ``limit`` bytes, and
    ``slack`` bytes before them: masked with them, since a secret printed across
    their start was cut in two, and its last part left unmasked."""

    def __init__(self, stream: IO[bytes], limit: int, slack: int = 0) -> None:
        self.limit = limit
        self.kept = limit + slack
        self.data = bytearray()
        self.total = 0
        self._stream = stream
        self.thread = threading.Thread(target=self._read, daemon=True, name="pgjobs-command-io")
        self.thread.start()

    def _read(self) -> None:
        with self._stream:
            while chunk := self._stream.read1(65536):  # type: ignore[attr-defined]
                self.total += len(chunk)
                self.data += chunk
                if len(self.data) > self.kept:
                    del self.data[: len(self.data) - self.kept]

    def text(self) -> str:
        """What was kept, the slack before the last ``limit`` bytes too."""
        return bytes(self.data).decode("utf-8", errors="replace")

    def width(self) -> int:
        """How many characters the last ``limit`` bytes are."""
        return len(bytes(self.data[-self.limit :]).decode("utf-8", errors="replace"))


@register_kind
class CommandConnector(ConnectorKind):
    kind = "command"
    label = "Command (child process)"
    options = (
        Option("executable", str, help="Path, or a name found on PATH.", check=_nonempty),
        Option("args", list, [], "Arguments always passed first.", check=str_list),
        Option("cwd", (str, type(None)), None, "Working directory."),
        Option("env", dict, {}, "Environment variables (not secret).", check=_environment),
        Option("inherit_env", bool, False, "Pass on the worker's whole environment."),
        Option("timeout", (int, float, type(None)), None, "Seconds; then killed.", seconds),
        Option("allow_job_args", bool, False, "Let jobs append arguments."),
        Option("allow_job_input", bool, False, "Let jobs send input to stdin."),
        Option("max_output_bytes", int, 65536, "Tail of stdout/stderr kept.", byte_count),
        Option("kill_grace", (int, float), 5.0, "Seconds between SIGTERM and SIGKILL.", seconds),
    )
    secrets = None  # any name: each secret becomes an environment variable

    @classmethod
    def validate(cls, config: Any, secret_names: Sequence[str]) -> dict[str, str]:
        problems = super().validate(config, secret_names)
        for name in secret_names:
            if not ENV_NAME.match(name):
                problems[f"secrets.{name}"] = "must be an environment variable name"
        return problems

    @secret_frames
    def run(self, args: Sequence[str] = (), input: str | bytes | None = None) -> CommandResult:
        """Run the command to its end; raise CommandFailed on a non-zero exit code.

        ``args`` and ``input`` come from the job: each needs the connector's consent
        (``allow_job_args``, ``allow_job_input``), or ConnectorRefused."""
        argv = self._argv(args)
        if input is not None and not isinstance(input, str | bytes):
            # Fed on a thread, it failed there: the program ran with no input, and the
            # job completed.
            raise TypeError(f"command input must be text (or bytes), not {shown(input)}")
        if input is not None and not self.config["allow_job_input"]:
            raise ConnectorRefused(
                f"connector {self.name!r} does not take input from jobs "
                "(set allow_job_input in its config to allow it)"
            )
        started = time.monotonic()
        process = subprocess.Popen(
            argv,
            cwd=self.config["cwd"],
            env=self._env(),
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # its own process group: killed as a whole
        )
        context = current_job()
        with _running_lock:
            _running[process.pid] = RunningCommand(
                self.name, process.pid, context.job.pk if context else None, started
            )
        logger.info("connector %s: started pid %s", self.name, process.pid)
        try:
            result = self._wait(process, input, started)
        finally:
            with _running_lock:
                _running.pop(process.pid, None)
            if process.poll() is None:
                self._kill(process)
        if result.exit_code != 0:
            how = (
                f"was killed by signal {-result.exit_code}"
                if result.exit_code < 0
                else f"exited with code {result.exit_code}"
            )
            raise CommandFailed(
                f"{os.path.basename(argv[0])} {how}: {result.stderr[-STDERR_IN_ERROR:]}", result
            )
        return result

    def call(self, payload: Any = None, **options: Any) -> dict[str, Any]:
        """``payload``: {"args": [...], "input": "..."} (both optional)."""
        payload = payload or {}
        if not isinstance(payload, dict) or set(payload) - {"args", "input"}:
            raise TypeError('command payload must be an object with "args" and/or "input"')
        return self.run(payload.get("args", ()), payload.get("input")).as_dict()

    def test(self) -> str:
        path = self._resolve(self.config["executable"])
        return f"{path} exists and is executable"

    # -- helpers -------------------------------------------------------------------------

    def _argv(self, args: Sequence[str]) -> list[str]:
        # A dict ran with its keys as arguments; 5 said "'int' object is not iterable".
        listed = isinstance(args, Sequence) and not isinstance(args, str | bytes)
        if not listed or not all(isinstance(a, str) for a in args):
            raise TypeError(f"command args must be a list of strings, not {shown(args)}")
        if args and not self.config["allow_job_args"]:
            raise ConnectorRefused(
                f"connector {self.name!r} does not take arguments from jobs "
                "(set allow_job_args in its config to allow it)"
            )
        return [self._resolve(self.config["executable"]), *self.config["args"], *args]

    def _resolve(self, executable: str) -> str:
        found = shutil.which(executable, path=self._env().get("PATH"))
        if found is None:
            raise ConnectorError(f"connector {self.name!r}: executable {executable!r} not found")
        return found

    def _env(self) -> dict[str, str]:
        if self.config["inherit_env"]:
            base = dict(os.environ)
        else:
            base = {key: os.environ[key] for key in BASE_ENV if key in os.environ}
        secrets = {name: str(value) for name, value in self.secret_values().items()}
        return {**base, **self.config["env"], **secrets}

    def _wait(self, process: subprocess.Popen[bytes], data: Any, started: float) -> CommandResult:
        limit = self.config["max_output_bytes"]
        slack = 4 * self._redactor().reach  # bytes: up to 4 per character
        stdout = _Tail(process.stdout, limit, slack)  # type: ignore[arg-type]
        stderr = _Tail(process.stderr, limit, slack)  # type: ignore[arg-type]
        if data is not None:
            threading.Thread(target=_feed, args=(process.stdin, data), daemon=True).start()
        timeout = self.config["timeout"]
        context = current_job()
        while True:
            try:
                code = process.wait(POLL_SECONDS)
                break
            except subprocess.TimeoutExpired:
                pass
            if context is not None and context.cancelled:
                self._kill(process)
                raise JobCancelled(f"job {context.job.pk} was cancelled; pid {process.pid} killed")
            if timeout is not None and time.monotonic() - started > timeout:
                self._kill(process)
                raise CommandTimeout(f"{process.args[0]} ran over {timeout}s and was killed")
        for tail in (stdout, stderr):
            tail.thread.join(5)  # a grandchild may hold the pipe open; don't wait for it
        return CommandResult(
            exit_code=code,
            stdout=self.redact_tail(stdout.text(), stdout.width()),
            stderr=self.redact_tail(stderr.text(), stderr.width()),
            pid=process.pid,
            seconds=round(time.monotonic() - started, 3),
            truncated=max(stdout.total, stderr.total) > limit,
        )

    def _kill(self, process: subprocess.Popen[bytes]) -> None:
        for sig, grace in ((signal.SIGTERM, self.config["kill_grace"]), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                return
            try:
                process.wait(grace)
                logger.info("connector %s: pid %s stopped by %s", self.name, process.pid, sig.name)
                return
            except subprocess.TimeoutExpired:
                continue


def _feed(stream: IO[bytes], data: str | bytes) -> None:
    try:
        with stream:
            stream.write(data.encode() if isinstance(data, str) else data)
    except BrokenPipeError:
        pass  # the process stopped reading; its exit code tells the rest
