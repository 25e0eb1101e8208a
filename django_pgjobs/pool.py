"""A fixed set of threads that run jobs, each keeping its own database connection.

Not concurrent.futures: its threads can't close their Django connections on
exit, and interpreter shutdown joins them, so one hung job would keep a
stopping worker alive. These threads are daemons and close their connections
when they finish.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from django.db import connections

from . import leftovers

logger = logging.getLogger(__name__)


class JobPool:
    def __init__(
        self,
        size: int,
        run: Callable[[Any], str],
        on_done: Callable[[Any, str], None],
        name: str = "pgjobs-job",
    ) -> None:
        self._inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._run = run
        self._on_done = on_done
        self._name = name
        self._lock = threading.Lock()
        self._retired: set[int] = set()
        self._threads = [
            threading.Thread(target=self._serve, name=f"{name}-{n}", daemon=True)
            for n in range(size)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, item: Any) -> None:
        self._inbox.put(item)

    def replace(self, thread_id: int) -> None:
        """Retire the thread ``thread_id`` (stuck in a job we gave up on) and start
        a new one in its place, so the pool keeps its size. The retired thread
        exits when its job finally returns."""
        with self._lock:
            self._retired.add(thread_id)
            thread = threading.Thread(
                target=self._serve, name=f"{self._name}-{len(self._threads)}", daemon=True
            )
            self._threads.append(thread)
        thread.start()

    def _serve(self) -> None:
        me = threading.get_ident()
        leftovers.own_this_thread()
        try:
            while me not in self._retired and (item := self._inbox.get()) is not None:
                try:
                    outcome = self._run(item)
                except Exception:  # execute() records task errors; this is our own bug
                    logger.exception("running %r crashed", item)
                    outcome = "crashed"
                # Retired too: the caller knows it gave up on the job (and says so).
                self._on_done(item, outcome)
        finally:
            leftovers.release_orm_thread()
            connections.close_all()

    def shutdown(self, timeout: float = 5.0) -> bool:
        """Let idle threads exit; True if all did within ``timeout``, for all of them
        together: a second each kept a stopping worker alive, its tasks still running,
        for as many seconds as it had threads busy."""
        serving = [t for t in self._threads if t.ident not in self._retired]
        for _ in serving:
            self._inbox.put(None)
        deadline = time.monotonic() + timeout
        for thread in serving:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(thread.is_alive() for thread in serving)
