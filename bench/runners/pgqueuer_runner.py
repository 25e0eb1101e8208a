"""Runs the workloads on pgqueuer, in a virtualenv of its own (see run.py)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

from common import Adapter, Config, main  # noqa: E402


def _event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's, as pgqueuer's own runner (pgqueuer_app.py) and an async web server
    such as uvicorn use when it is installed; asyncio's without it
    (BENCH_PGQUEUER_UVLOOP=0 measures that)."""
    if os.environ.get("BENCH_PGQUEUER_UVLOOP") != "0":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


class PgQueuer(Adapter):
    name = "pgqueuer"
    version = version("pgqueuer")
    # Concurrency is the dequeue batch size (batch_size, its throughput knob; 10 by
    # default): pgqueuer runs a batch's async jobs at once. Its other knobs are
    # left at their defaults: max_concurrent_tasks and concurrency_limit (both
    # unlimited), and the durable tables of `pgqueuer install` (the "volatile"
    # durability makes them UNLOGGED: a guarantee we would not give up).
    drain_configs = [
        Config(processes, batch)
        for processes in (1, 2, 4)
        for batch in (10, 50, 100, 200, 500, 1000)
        if processes != 4 or batch >= 200
    ] + [Config(processes, 1000) for processes in (6, 8)]
    # The best by the steady rate of a 200,000-job drain (bench/README.md lists every
    # figure; the 20,000-job steady rate rewards holding much of the drain in flight,
    # which 8 x 1,000 does best): 4 x 1,000 by a few percent over 2, 6 and 8 processes.
    best = Config(4, 1000)
    sustained_configs = [best]
    latency_config = Config(1, 10)
    # Its LISTEN shares the connection with its queries: not visible in pg_stat_activity.
    listeners_per_process = 0

    def __init__(self, url: str, workdir: Path) -> None:
        super().__init__(url, workdir)
        self.loop = _event_loop()
        self.enqueued = 0
        self.queries = None

    def _run(self, coroutine: Any) -> Any:
        return self.loop.run_until_complete(coroutine)

    def _connect(self) -> None:
        import asyncpg
        from pgqueuer import AsyncpgDriver, Queries

        self.conn = self._run(asyncpg.connect(self.url))
        self.queries = Queries(AsyncpgDriver(self.conn))

    def worker_env(self) -> dict[str, str]:
        return {"PGDSN": self.url, "PYTHONPATH": os.pathsep.join([str(HERE), str(HERE.parent)])}

    def install(self) -> None:
        # `pgqueuer autovac`: its "recommended autovacuum settings" for its tables,
        # among them fillfactor 70 on the queue table (room for HOT updates of a
        # pick). BENCH_PGQUEUER_AUTOVAC=0 leaves them out (to measure what they do).
        commands = ["install"] + (
            ["autovac"] if os.environ.get("BENCH_PGQUEUER_AUTOVAC") != "0" else []
        )
        for command in commands:
            subprocess.run(
                [sys.executable, "-m", "pgqueuer", command],
                env={**os.environ, **self.worker_env()},
                check=True,
                capture_output=True,
            )
        self._connect()

    def reset(self) -> None:
        self._run(self.conn.execute("TRUNCATE pgqueuer, pgqueuer_log, pgqueuer_statistics"))
        self.enqueued = 0

    def enqueue_each(self, count: int) -> None:
        # One coroutine awaits every enqueue, as an async web app would: a
        # run_until_complete per job cost pgqueuer's client about 36 us of Python each
        # (a task, the loop started and stopped; enqueue_cost.py, bench/README), which
        # the loop's one turn per await doesn't.
        self._run(self._enqueue_each(count))
        self.enqueued += count

    async def _enqueue_each(self, count: int) -> None:
        for _ in range(count):
            await self.queries.enqueue("noop", None)

    def enqueue_bulk(self, count: int) -> bool:
        self._run(self.queries.enqueue(["noop"] * count, [None] * count, [0] * count))
        self.enqueued += count
        return True

    def enqueue_stamp(self, seq: int) -> None:
        self._run(self.queries.enqueue("stamp", str(seq).encode()))
        self.enqueued += 1

    def done(self) -> int:
        # Finished jobs leave the queue table (their log rows get folded away).
        return self.enqueued - self._run(self.conn.fetchval("SELECT count(*) FROM pgqueuer"))

    def busy(self) -> bool:
        return self._run(self.conn.fetchval("SELECT EXISTS (SELECT FROM pgqueuer)"))

    def remaining(self) -> int:
        return self._run(self.conn.fetchval("SELECT count(*) FROM pgqueuer"))

    def outcome_xids(self) -> list[int]:
        # A finished job leaves the queue table in the statement that logs its
        # success (its log_job query), so the log row's transaction is the outcome's.
        rows = self._run(
            self.conn.fetch(
                "SELECT xmin::text::bigint FROM pgqueuer_log WHERE status = 'successful'"
            )
        )
        return [xid for (xid,) in rows]

    def enqueue_stamps(self, first: int, count: int) -> None:
        seqs = range(first, first + count)
        self._run(
            self.queries.enqueue(["stamp"] * count, [str(s).encode() for s in seqs], [0] * count)
        )
        self.enqueued += count

    def worker_commands(self, config: Config) -> list[list[str]]:
        command = [sys.executable, str(HERE / "pgqueuer_app.py"), str(config.concurrency)]
        return [command] * config.processes

    def close(self) -> None:
        self._run(self.conn.close())
        self.loop.close()


if __name__ == "__main__":
    main(PgQueuer)
