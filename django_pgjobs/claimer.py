"""The claimer: claim a worker's due jobs, queue by queue, best first.

It keeps what the claims go by: the worker's queues (a worker of every queue reads
their list again as queues are added), their settings between claims (dropped when a
queue's name is notified), the queues whose claim failed (each skipped until its own
retry while the others are claimed: ``Claimer._claim_failed``) and when a rate
limit's window has room again (``room_at``). The worker owns it: publishing the
claimed jobs' events, starting them and a claim in doubt stay the worker's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from django.db import transaction

from . import conf, db, limits, loaded, logs, outage, ratelimits
from .models import Job, Queue, WorkerProcess

if TYPE_CHECKING:
    from .notifier import Notifier

# The worker's logger: its lines are said as they were before the claims had a module
# of their own (a site's logging config names the logger).
logger = logging.getLogger("django_pgjobs.worker")

#: Least seconds between two reads of the queues' names by a worker of every queue:
#: anyone who may connect can NOTIFY names it doesn't know.
MIN_QUEUE_NAMES_REFRESH = 1.0

#: Least seconds between the claims a queue's key_rate_limit wakes a worker for (a
#: key held back has room within its period; a tiny period must not spin).
MIN_KEY_RECLAIM = 0.1

#: Most seconds between two claims of a queue whose claim keeps failing with an error
#: no lost connection explains (see Claimer._claim_failed): 0.1 s after the first
#: failure, then twice as long each time.
QUEUE_RETRY_MAX = 10.0

#: What a claimer tells its worker of a queue whose claim failed (the queue's name and
#: the error): the claim is in doubt (it may have committed jobs it never returned).
InDoubt = Callable[[str, Exception], None]


class Claimer:
    """Claims the due jobs of a worker's queues.

    ``capacity`` says how many jobs the worker holds at most (its threads and
    prefetch), as many as a refused queue's claim is tried for; ``in_doubt`` puts the
    worker's claim in doubt after a queue's claim failed. Both are the worker's.
    """

    def __init__(
        self,
        using: str,
        queues: list[str],
        every_queue: bool,
        *,
        states: list[str],
        poll_interval: float,
        capacity: Callable[[], int],
        in_doubt: InDoubt,
    ) -> None:
        self.using = using
        # A worker of every queue reads the list again as queues are added
        # (``_refresh_queue_names``).
        self.every_queue = every_queue
        self.queues = queues
        self._queue_names_read_at = time.monotonic()
        self._queue_names_stale = False
        self.states = states
        self.poll_interval = poll_interval
        self._capacity = capacity
        self._in_doubt = in_doubt
        #: The worker's row's id, once registered: the claims are made under it.
        self.worker_id: int | None = None
        # Set by ``start``: the claims of a started worker's queues fail each on its
        # own, and its queues' settings are kept while this notifier listens.
        self._started = False
        self._notifier: Notifier | None = None
        # (generation, read at, configs): see _queue_configs.
        self._configs: tuple[int, float, dict[str, dict]] | None = None
        self._config_generation = 0
        #: time.monotonic() when a full rate limit's window has room again (see
        #: _claim_rated): the loop claims again then, not at its next poll.
        self.room_at: float | None = None
        #: Queues whose claim failed with an error no lost connection explains (a
        #: site's trigger refusing one of their rows), by name: each skipped until its
        #: own retry, while the worker's other queues are claimed as usual. A started
        #: worker's only (see claim). The loop's thread only.
        self.refused: dict[str, _Refused] = {}

    def start(self, notifier: Notifier) -> None:
        """The worker started, listening with ``notifier``."""
        self._started = True
        self._notifier = notifier

    def claim(self, limit: int, now: datetime) -> list[Job]:
        """Claim up to ``limit`` jobs due at ``now`` across the worker's queues, best
        first (their events are the caller's to publish).

        In a started worker, a queue whose claim fails with an error no lost
        connection explains is skipped (``_claim_failed``) and the others are claimed
        all the same: one row a site's trigger refuses held up every queue of the
        worker; so does a statement timeout, a lock timeout or a deadlock there (no
        connection trouble by its SQLSTATE: ``db.connection_trouble``). A lost
        connection still fails the whole claim, for the loop to handle; so does any
        error without a pool (``drain``, ``run_once`` in tests: the caller
        sees it).
        """
        self.room_at = None  # set again by the claims of full rate limits
        configs = self._queue_configs()
        ordered = sorted(
            self.queues, key=lambda name: -(configs.get(name) or {}).get("priority", 0)
        )
        claimed: list[Job] = []
        alone = self._started  # each queue's claim fails on its own
        if self.refused:
            self._forget_refused(configs)
        tried: set[str] = set()
        for name in ordered:
            wanted = limit - len(claimed)
            if wanted <= 0:
                break
            tried.add(name)
            config = configs.get(name) or {}
            if config.get("paused"):
                continue  # its failures, if any, are kept (see _forget_refused)
            if alone and not self._claim_due(name):
                continue
            params = self._claim_params(name, wanted, now)
            if not alone:
                claimed += self._claim_queue(params, config)
                continue
            try:
                jobs = self._claim_queue(params, config)
            except Exception as error:
                # Told by its SQLSTATE: a statement timeout, a lock timeout, a deadlock
                # on this queue's claim are OperationalErrors, yet no lost connection.
                if db.connection_trouble(error):
                    raise  # the loop's: a claim in doubt, an outage said
                self._claim_failed(name, error)
                continue
            if name in self.refused:
                self._claim_passed(name)
            claimed += jobs
        if alone and self.refused:
            self.try_refused(now, configs, tried)
        # (A row whose run_at could not be loaded sorts as due now; it is failed at once.)
        claimed.sort(key=lambda job: (-job.priority, job.run_at or now, job.pk))
        return claimed

    def _claim_params(self, name: str, limit: int, now: datetime) -> dict:
        """The parameters of a claim of up to ``limit`` jobs of queue ``name``."""
        most = loaded.limit()  # no larger JSON value is loaded (loaded.py)
        return {
            "queue": name,
            "limit": limit,
            "now": now,
            "worker_id": self.worker_id,
            "states": self.states,
            "most": most,
            "inline": loaded.inline(most),  # larger ones are read when the job runs
        }

    def _claim_queue(self, params: dict, config: dict) -> list[Job]:
        if config.get("limited"):
            return self._claim_limited(params)
        return db.fetch_jobs("claim", params, self.using)

    def try_refused(
        self, now: datetime, configs: dict | None = None, tried: Collection[str] = ()
    ) -> None:
        """Try the claims of the refused queues that are due and were not claimed
        (``tried``): the worker is full, or its other queues filled the claim. Each in a
        transaction rolled back: nothing is claimed, nor committed in doubt, yet a row
        a site's trigger still refuses fails it again, and a queue whose claim would go
        through is said so. Else a full worker tried it again only once a slot freed,
        and the readiness probe said its claims failing long after the row was dealt
        with. Tried at the queue's backoff; up to the worker's capacity, as a claim
        with every slot free would."""
        if configs is None:
            configs = self._queue_configs()
            self._forget_refused(configs)
        room_at = self.room_at  # a rate limit's room: for the claims that take jobs
        try:
            for name in sorted(self.refused):
                config = configs.get(name) or {}
                if name in tried or config.get("paused") or not self._claim_due(name):
                    continue
                params = self._claim_params(name, self._capacity(), now)
                try:
                    with transaction.atomic(using=self.using):
                        self._claim_queue(params, config)
                        transaction.set_rollback(True, using=self.using)
                except Exception as error:
                    if db.connection_trouble(error):
                        raise  # the loop's, as a claim's
                    self._claim_failed(name, error, undone=True)
                    continue
                self._claim_passed(name, tried_full=True)
        finally:
            self.room_at = room_at

    def _claim_due(self, name: str) -> bool:
        """Whether queue ``name`` is to be claimed now: not backed off after a failure."""
        refused = self.refused.get(name)
        return refused is None or time.monotonic() >= refused.retry_at

    def _claim_failed(self, name: str, error: Exception, undone: bool = False) -> None:
        """The claim of queue ``name`` failed with an error no lost connection explains:
        a statement the server refused (a site's trigger or constraint on one of its
        rows) or a bug of ours meeting an odd row. Said once while it repeats, naming
        the queue (at DEBUG after that, in full again once it changes or a claim went
        through); the queue is skipped for 0.1 s, then twice as long after each failure
        up to QUEUE_RETRY_MAX, while the others are claimed on every pass and the
        loop's other steps (timeouts, hand-backs) keep their pace.

        The claim is in doubt: it may have committed jobs it never returned (a failure
        as it built them, after its statement committed), which the worker's
        ``_hand_back_unheld`` gives back, uncounted, at the start of the next pass,
        before the queue is claimed again. A claim the server refused committed nothing
        (its statement, or the transaction of a limited queue's, rolled back): the
        hand-back finds none. The connection is kept: a refused statement leaves it
        idle, in autocommit, and the other queues' claims of this pass go on on it.
        ``undone``: a claim tried in a transaction rolled back (``try_refused``), in
        doubt of nothing."""
        now = time.monotonic()
        refused = self.refused.get(name)
        if refused is None:
            pk = self.worker_id if self.worker_id is not None else "-"
            what = f"worker {pk}: a claim of queue {name!r}"
            refused = self.refused[name] = _Refused(logs.LoopStep(logger, what), since=now)
        refused.kind = type(error).__name__
        refused.retry_at = now + outage.spread(refused.backoff.failed())
        refused.step.failed(error)
        if not undone:
            self._in_doubt(name, error)

    def _claim_passed(self, name: str, tried_full: bool = False) -> None:
        """The claim of refused queue ``name`` went through (``tried_full``: tried and
        undone while the worker was full, ``try_refused``)."""
        refused = self.refused.pop(name)
        logger.info(
            "worker %s: queue %r %s after %s (%d failed claim(s) meanwhile%s)%s",
            self.worker_id if self.worker_id is not None else "-",
            name,
            "claims go through again" if tried_full else "claimed again",
            logs.delay(time.monotonic() - refused.since),
            refused.failures,
            f"; paused {logs.delay(refused.paused_for)} in between" if refused.paused_for else "",
            "; tried while the worker is full: its jobs are claimed once a slot frees"
            if tried_full
            else "",
        )

    def failing(self, longer_than: float) -> list[tuple[str, float, int, str]]:
        """The queues whose claims have kept failing for more than ``longer_than``
        seconds, for the worker's ``failing``: (queue name; time.monotonic() of the
        first failure; failures since; the last error's class). Called from another
        thread: it reads what the loop's thread writes, and changes nothing."""
        now = time.monotonic()
        found: list[tuple[str, float, int, str]] = []
        try:
            refused = list(self.refused.items())
        except RuntimeError:  # changed while copied (no GIL): read again next report
            refused = []
        for name, queue_refused in sorted(refused):
            if not queue_refused.paused and now - queue_refused.since > longer_than:
                found.append(
                    (name, queue_refused.since, queue_refused.failures, queue_refused.kind)
                )
        return found

    def due_ahead(self, now: float) -> list[float]:
        """When (time.monotonic(), after ``now``) the loop is to claim again before its
        next poll: a rate limit's room, the retry of a queue backed off after its claim
        failed (tried, if the worker is full: ``try_refused``).

        Only those still ahead. A rate limit's room: the next claim clears it, and one
        gone by while the worker was full (no claim) woke the loop every 10 ms. A
        refused queue's retry not paused either: one past (claimed or tried at every
        pass) waits for a pass the loop makes anyway, not for a wake-up every 10 ms; a
        paused one is not claimed until resumed."""
        due = [self.room_at] if self.room_at is not None and self.room_at > now else []
        return due + [
            r.retry_at for r in self.refused.values() if r.retry_at > now and not r.paused
        ]

    def _forget_refused(self, configs: dict) -> None:
        """Drop the failures of queues this worker no longer claims (a worker of every
        queue reads their list again), and mark those of paused queues (``configs``).

        A paused queue (by an operator while a row is dealt with, say) makes no
        progress on purpose: its failures are not said failing (``failing``), nor hold
        the worker unready. They are kept, not dropped: resumed with the row still
        there, its claims go on failing as before, said at DEBUG, failing for as long
        as before the pause (dropped, the first failure after a pause was said in full
        again, as if new, and counted from then; kept whole, a pause of days was
        counted as failing). Resumed, it is claimed at once (its retry is past), then
        backed off as before the pause."""
        for name in [name for name in self.refused if name not in self.queues]:
            del self.refused[name]
        now = time.monotonic()
        for name, refused in self.refused.items():
            refused.pause(bool((configs.get(name) or {}).get("paused")), now)

    def notified(self, payload: str) -> bool:
        """A name was notified on the jobs channel: new jobs or a changed queue row (the
        payload doesn't say which) drop the queues' settings kept, and the loop is to
        claim (True). A worker of every queue reads their list again for a name it
        doesn't know: a queue added since the list was read, likely."""
        if payload in self.queues:
            self._config_generation += 1  # forget_queue_configs: no call more per NOTIFY
            return True
        if self.every_queue:
            self._queue_names_stale = True
            self._config_generation += 1
            return True
        return False

    def _queue_configs(self) -> dict[str, dict]:
        """Paused/blocking/limit/priority of this worker's queues.

        A started worker keeps them between claims: any change to a queue row
        notifies its name on the jobs channel, which drops the copy (so does a
        reconnect of the LISTEN connection, since notifications may have been
        lost), and it is read again after ``poll_interval`` regardless. Without
        a listening notifier (``drain``, tests) they are read every time.
        """
        generation = self._config_generation
        listening = self._notifier is not None and self._notifier.connected.is_set()
        cached = self._configs
        if (
            listening
            and cached is not None
            and cached[0] == generation
            and time.monotonic() - cached[1] < self.poll_interval
            and not self._queue_names_stale
        ):
            return cached[2]
        self._refresh_queue_names()
        rows = db.fetch_dicts("queue_configs", {"queues": self.queues}, self.using)
        configs = {row["name"]: row for row in rows}
        # Kept only if nothing was notified while we read (the generation is unchanged).
        self._configs = (generation, time.monotonic(), configs)
        return configs

    def forget_queue_configs(self) -> None:
        """Read the queues' settings again at the next claim."""
        self._config_generation += 1

    def _refresh_queue_names(self) -> None:
        """For a worker of every queue: read the queues again when one it doesn't know
        was notified (a queue row added: in the admin, say), or, while it listens,
        ``poll_interval`` after the last read; at most once in
        ``MIN_QUEUE_NAMES_REFRESH``. The list was read only at start, and a queue added
        later had its jobs wait beside a live worker until it was restarted."""
        if not self.every_queue:
            return
        since = time.monotonic() - self._queue_names_read_at
        polled = self._notifier is not None and since >= self.poll_interval
        if not (self._queue_names_stale or polled):
            return
        if since < MIN_QUEUE_NAMES_REFRESH:
            self._room_again(MIN_QUEUE_NAMES_REFRESH - since)  # claim again then
            return
        self._queue_names_stale = False
        self._queue_names_read_at = time.monotonic()
        names = all_queue_names(self.using)
        if names == self.queues:
            return
        added = [name for name in names if name not in self.queues]
        self.queues = names
        if self.worker_id is not None:
            WorkerProcess.objects.using(self.using).filter(pk=self.worker_id).update(queues=names)
            logger.info(
                "worker %s: queues now %s%s",
                self.worker_id,
                ", ".join(names),
                f" (added {', '.join(added)})" if added else "",
            )

    def _claim_limited(self, params: dict) -> list[Job]:
        with transaction.atomic(using=self.using):
            locked = db.fetch_dicts("lock_queue", params, self.using)
            if not locked or locked[0]["paused"]:
                return []
            config = locked[0]
            if config["blocking"]:
                return db.fetch_jobs("claim_blocking", params, self.using)
            params = {
                **params,
                "concurrency": config["concurrency"],
                "key_concurrency": config["key_concurrency"],
                "key_rate_limit": config["key_rate_limit"],
                "key_rate_period": config["key_rate_period"],
                "key_scope": ratelimits.key_scope(params["queue"]),
                "key_length": limits.TEXT_LENGTH,  # the longest key enqueue writes
                # Under a rate limit per key, the start is the claim's own clock (None),
                # later than every start recorded before in its keys' windows.
                "started_at": None if config["key_rate_limit"] else params["now"],
            }
            if config["rate_limit"] is None:
                claimed = db.fetch_jobs(_limited_claim(config), params, self.using)
            else:
                claimed = self._claim_rated(params, config)
        if config["key_rate_limit"] and len(claimed) < params["limit"]:
            # A key's window may have held jobs back: it has room within a period.
            self._room_again(max(config["key_rate_period"], MIN_KEY_RECLAIM))
        return claimed

    def _claim_rated(self, params: dict, config: dict) -> list[Job]:
        """Claim what the queue's rate limit has left (its turn is taken: lock_queue.sql)
        and record the starts; once the window is full, wake up when it has room."""
        scope = ratelimits.queue_scope(params["queue"])
        window = ratelimits.read(scope, config["rate_limit"], config["rate_period"], self.using)
        wanted = min(params["limit"], window.left)
        claimed = (
            db.fetch_jobs(
                _limited_claim(config),
                {**params, "limit": wanted, "started_at": window.now},
                self.using,
            )
            if wanted
            else []
        )
        ratelimits.record(window, len(claimed), scope, self.using)
        if len(claimed) == window.left:  # full: more may be due by then
            self._room_again(window.room_again_in())
        return claimed

    def _room_again(self, seconds: float) -> None:
        """Claim again in ``seconds`` at the latest: a rate limit's window has room then."""
        at = time.monotonic() + seconds
        if self.room_at is None or at < self.room_at:
            self.room_at = at


@dataclass
class _Refused:
    """A queue whose claim failed with an error no lost connection explains (see
    Claimer._claim_failed), until one goes through."""

    step: logs.LoopStep  # says the failure once while it repeats
    since: float  # time.monotonic() of the first failure
    retry_at: float = 0.0  # time.monotonic() after which the queue is claimed again
    backoff: outage.Doubling = field(default_factory=lambda: outage.Doubling(QUEUE_RETRY_MAX))
    kind: str = ""  # the class of the last failure's error (for the readiness probe)
    paused_at: float | None = None  # time.monotonic() the queue was seen paused, if it is
    paused_for: float = 0.0  # seconds paused since the first failure, ended pauses

    @property
    def failures(self) -> int:
        """Failed claims since the first."""
        return self.backoff.failures

    @property
    def paused(self) -> bool:
        """The queue is paused: not said failing (Claimer._forget_refused)."""
        return self.paused_at is not None

    def pause(self, paused: bool, now: float) -> None:
        """The queue is (still, or no longer) paused at ``now``. A pause ended moves
        ``since`` later by its length: the failing time counts no pause (a queue paused
        for days, resumed, was said failing for days)."""
        if paused and self.paused_at is None:
            self.paused_at = now
        elif not paused and self.paused_at is not None:
            self.since += now - self.paused_at
            self.paused_for += now - self.paused_at
            self.paused_at = None


def _limited_claim(config: dict) -> str:
    """The claim statement of a limited queue: with a per-key limit, the one that
    counts each key's executing jobs and recent starts (claim_keyed.sql), else
    claim_limited.sql."""
    keyed = config.get("key_concurrency") or config.get("key_rate_limit")
    return "claim_keyed" if keyed else "claim_limited"


def all_queue_names(using: str) -> list[str]:
    """The queues of a worker of every queue: the declared ones (PGJOBS["QUEUES"]),
    then those only stored, by name."""
    declared = list(conf.get("QUEUES"))
    stored = Queue.objects.using(using).exclude(name__in=declared).values_list("name", flat=True)
    return declared + sorted(stored)
