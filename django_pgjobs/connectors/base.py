"""What a connector kind is: its options, its secrets, and the object tasks use.

A kind is a class. Its class attributes describe what an operator stores
(``options`` for the plain configuration, ``secrets`` for the names of the
encrypted values); an instance is built for each job from the stored row, so
a changed URL or password applies to the next job without a redeploy.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from django.views.decorators.debug import sensitive_variables

from .. import limits, payload
from ..context import current_job
from ..exceptions import InvalidOption
from ..redaction import Redactor

#: On a connector's call: Django's error reports (an HTML error email, a handler that
#: renders frames) show none of the variables of its frame nor of any frame it calls,
#: Python's own libraries included, which hold what was sent (the Authorization
#: header, Popen's environment, smtplib's password) when a view's call fails.
secret_frames = sensitive_variables()


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()


@dataclass(frozen=True)
class Option:
    """One key of a connector's plain configuration."""

    name: str
    types: type | tuple[type, ...]
    default: Any = REQUIRED
    help: str = ""
    #: Returns what is wrong with a value of the right type, or None.
    check: Callable[[Any], str | None] | None = None

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def problem(self, value: Any) -> str | None:
        types = self.types if isinstance(self.types, tuple) else (self.types,)
        wrong_bool = isinstance(value, bool) and bool not in types
        if not isinstance(value, types) or wrong_bool:
            names = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            # The type only: a misplaced value may be a URL with its password, and this
            # message goes into job errors (shown by the API) and admin messages.
            return f"must be {names}, not {type(value).__name__}"
        return self.check(value) if self.check else None


class ConnectorKind:
    """Base class of connector kinds; subclass it and register it with ``register_kind``.

    Instances are what a task receives: ``name``, ``config`` (defaults filled
    in) and ``secret(name)``. ``repr`` and ``str`` never show secrets.
    """

    #: The value stored in ``Connector.kind``.
    kind: ClassVar[str] = ""
    label: ClassVar[str] = ""
    options: ClassVar[Sequence[Option]] = ()
    #: Names of the secrets this kind reads; None accepts any name.
    secrets: ClassVar[Sequence[str] | None] = ()
    #: Options a secret of the same name may hold instead, never both (http's ``url``:
    #: a webhook's URL whose path is its key). Read with ``option()``.
    secret_options: ClassVar[Sequence[str]] = ()

    def __init__(self, name: str, config: dict[str, Any], secrets: dict[str, Any]) -> None:
        self.name = name
        # A required option is missing only where a secret holds it (secret_options).
        defaults = {o.name: copy.deepcopy(o.default) for o in self.options if not o.required}
        self.config = defaults | config
        self.__secrets = dict(secrets)
        self.__also: list[Any] = []  # mask_also's
        self.__redactor: Redactor | None = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"

    __str__ = __repr__

    # -- what kinds and tasks use -------------------------------------------------------

    def secret(self, name: str, default: Any = None) -> Any:
        return self.__secrets.get(name, default)

    def secret_values(self) -> dict[str, Any]:
        return dict(self.__secrets)

    def option(self, name: str) -> Any:
        """The option ``name``: the secret of that name if ``secret_options`` has it and
        it is set, else the config's."""
        if name in self.secret_options and name in self.__secrets:
            return self.__secrets[name]
        return self.config[name]

    def masked_values(self) -> list[Any]:
        """What ``redact`` (and a job running with this connector) masks: the secrets'
        values, and parts of them that travel alone (override: the path of http's
        ``url`` secret, which a server's 404 page echoes)."""
        return [*self.__secrets.values(), *self.__also]

    def mask_also(self, values: Iterable[Any]) -> None:
        """Mask ``values`` too from now on, in ``redact`` and in the running job's error,
        result and log: credentials a task passed to one call, which no secret holds."""
        values = [value for value in values if value and value not in self.__also]
        if not values:  # each call of a connector used in a loop adds its few once
            return
        self.__also += values
        if self.__redactor is not None:
            self.__redactor.add(values)
        running = current_job()
        if running is not None:
            running.add_secrets(values)

    def redact(self, text: str) -> str:
        """``text`` with every secret value masked (``masked_values``), raw and in the
        forms it travels in (base64, URL-encoded, JSON-escaped; see
        django_pgjobs.redaction), and every Basic or Bearer credential; for messages and
        captured output."""
        return self._redactor().text(text)

    def redact_head(self, text: str, width: int) -> str:
        """The first ``width`` characters of ``text``, masked as ``redact`` masks: before
        the cut, so that no part of a secret the cut split is left (an answer's excerpt)."""
        return self._redactor().head(text, width)

    def redact_tail(self, text: str, width: int) -> str:
        """The last ``width`` characters of ``text``, masked (``redact_head``)."""
        return self._redactor().tail(text, width)

    def _redactor(self) -> Redactor:
        if self.__redactor is None:
            self.__redactor = Redactor(self.masked_values())
        return self.__redactor

    def call(self, payload: Any = None, **options: Any) -> Any:
        """Do this kind's one obvious thing with ``payload`` (the ``call`` task uses it)."""
        raise NotImplementedError(f"connector kind {self.kind!r} has no call()")

    def test(self) -> str:
        """Check the connection without side effects; return what was seen, or raise."""
        raise NotImplementedError(f"connector kind {self.kind!r} has no connection test")

    # -- validation -------------------------------------------------------------------

    @classmethod
    def validate(cls, config: Any, secret_names: Sequence[str]) -> dict[str, str]:
        """Problems with a stored configuration, by field (``config.url``); {} if none."""
        if isinstance(config, payload.Unreadable):  # written by SQL: say why, not our class
            return {"config": f"can't be read: {config.problem}"}
        if not isinstance(config, dict):
            return {"config": f"must be a JSON object, not {type(config).__name__}"}
        problems: dict[str, str] = {}
        known = {option.name: option for option in cls.options}
        for key in sorted(set(config) - set(known)):
            problems[f"config.{key}"] = f"unknown option; {cls.kind} takes {sorted(known)}"
        for option in cls.options:
            if option.name in cls.secret_options and option.name in secret_names:
                if option.name in config:  # which one is used would be a surprise
                    problems[f"config.{option.name}"] = (
                        f"the {option.name} secret is set: leave this option out"
                    )
                continue
            if option.name not in config:
                if option.required:
                    problems[f"config.{option.name}"] = "is required"
                continue
            problem = option.problem(config[option.name])
            if problem:
                problems[f"config.{option.name}"] = problem
        if cls.secrets is not None:
            for name in sorted(set(secret_names) - set(cls.secrets)):
                takes = list(cls.secrets)
                problems[f"secrets.{name}"] = f"unknown secret; {cls.kind} takes {takes}"
        if not problems:
            problems.update(cls.check({o.name: o.default for o in cls.options} | config))
        return problems

    @classmethod
    def check(cls, config: dict[str, Any]) -> dict[str, str]:
        """Rules across options (override); ``config`` has its defaults filled in."""
        return {}

    @classmethod
    def write_problems(cls, config: dict[str, Any]) -> dict[str, str]:
        """Problems, by field, of a config being written, not of one already stored
        (override): ``Connector.save()`` and ``full_clean()`` apply them, a worker does
        not, so a rule added in a release refuses new configs without failing the jobs
        of a row saved before it. ``config`` may be of any shape (``save()`` without
        ``full_clean()``): look only at what has the expected type."""
        return {}

    @classmethod
    def added_write_problems(cls, config: dict[str, Any], stored: Any) -> dict[str, str]:
        """``write_problems`` of ``config`` less what the row's ``stored`` config (None
        for a new row; any shape, written by SQL) already had: a row saved before a rule
        keeps working and can be edited as long as the edit adds nothing the rule
        refuses. Here a field's problem is forgiven if its message is the stored one's;
        override where a message lists several things, or an edit that removes one of
        them (the rule's own advice) is refused."""
        problems = cls.write_problems(config)
        before = cls.write_problems(stored) if problems and isinstance(stored, dict) else {}
        return {
            field: problem for field, problem in problems.items() if before.get(field) != problem
        }

    @classmethod
    def secret_problems(cls, values: dict[str, Any]) -> dict[str, str]:
        """Problems, by field (``secrets.password``), of secret values being set
        (override); the message must not show the value."""
        return {}


# -- small checks shared by kinds -------------------------------------------------------


def positive(value: Any) -> str | None:
    return None if value is None or value > 0 else "must be greater than 0"


def seconds(value: Any) -> str | None:
    """A wait: finite, above 0, at most a year (1e300 passed ``positive`` and made every
    socket and subprocess wait raise OverflowError)."""
    if value is None:
        return None
    try:
        limits.seconds(value, "")
    except InvalidOption as refused:
        return refused.problem
    return None


#: Most bytes of an answer or output a connector holds in memory: a gibibyte. read()
#: of 2**62 bytes raised MemoryError, of 10**30 OverflowError, at every job.
MAX_BYTES = 2**30


def byte_count(value: Any) -> str | None:
    try:
        limits.whole_number(value, "", 1, MAX_BYTES)
    except InvalidOption as refused:
        return refused.problem
    return None


def str_dict(value: dict[Any, Any]) -> str | None:
    bad = [k for k, v in value.items() if not isinstance(k, str) or not isinstance(v, str)]
    return (
        f"keys and values must be strings (that of {limits.shown(bad[0])} is not)" if bad else None
    )


def str_list(value: list[Any]) -> str | None:
    bad = [index for index, item in enumerate(value) if not isinstance(item, str)]
    return (
        f"items must be strings (item {bad[0]} is {type(value[bad[0]]).__name__})" if bad else None
    )
