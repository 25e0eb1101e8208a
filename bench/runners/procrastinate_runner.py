"""Runs the workloads on procrastinate, in a virtualenv of its own (see run.py)."""

from __future__ import annotations

import os
import sys
from importlib.metadata import version
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

from common import Adapter, Config, main  # noqa: E402


class Procrastinate(Adapter):
    name = "procrastinate"
    version = version("procrastinate")
    # Async no-op tasks; concurrency is coroutines per process (its documented knob,
    # `worker --concurrency`); processes are separate `procrastinate worker`s. It
    # fetches one job per query whatever the concurrency; LISTEN/NOTIFY is on (its
    # default) and its polling interval only matters when idle.
    drain_configs = [
        Config(processes, concurrency)
        for processes, concurrency in ((1, 50), (2, 10), (2, 50), (4, 10), (4, 25), (4, 50))
    ]
    best = Config(4, 25)
    # It runs 40-250 jobs/s here: a twentieth of the jobs keeps a round to seconds.
    scale = 0.05
    latency_config = Config(1, 10)

    def __init__(self, url: str, workdir: Path) -> None:
        super().__init__(url, workdir)
        os.environ.update(self.worker_env())
        from procrastinate_app import app

        self.app = app

    def worker_env(self) -> dict[str, str]:
        return {
            "BENCH_DATABASE_URL": self.url,
            "PYTHONPATH": os.pathsep.join([str(HERE), str(HERE.parent)]),
        }

    def install(self) -> None:
        import psycopg

        with self.app.open():
            self.app.schema_manager.apply_schema()
        self.app.open()
        self.conn = psycopg.connect(self.url, autocommit=True)

    def reset(self) -> None:
        self.conn.execute(
            "TRUNCATE procrastinate_jobs, procrastinate_events, procrastinate_workers CASCADE"
        )

    def enqueue_each(self, count: int) -> None:
        from procrastinate_app import noop

        for _ in range(count):
            noop.defer()

    def enqueue_bulk(self, count: int) -> bool:
        from procrastinate_app import noop

        noop.batch_defer(*[{}] * count)
        return True

    def enqueue_stamp(self, seq: int) -> None:
        from procrastinate_app import stamp

        stamp.defer(seq=seq)

    def done(self) -> int:
        return self.conn.execute(
            "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'"
        ).fetchone()[0]

    def busy(self) -> bool:
        return self.conn.execute(
            "SELECT EXISTS (SELECT FROM procrastinate_jobs WHERE status IN ('todo', 'doing'))"
        ).fetchone()[0]

    def remaining(self) -> int:
        return self.conn.execute(
            "SELECT count(*) FROM procrastinate_jobs WHERE status IN ('todo', 'doing')"
        ).fetchone()[0]

    def outcome_xids(self) -> list[int]:
        rows = self.conn.execute(
            "SELECT xmin::text::bigint FROM procrastinate_jobs WHERE status = 'succeeded'"
        ).fetchall()
        return [xid for (xid,) in rows]

    def worker_commands(self, config: Config) -> list[list[str]]:
        command = [
            sys.executable,
            "-m",
            "procrastinate",
            "--app=procrastinate_app.app",
            "worker",
            f"--concurrency={config.concurrency}",
        ]
        return [command] * config.processes

    def close(self) -> None:
        self.conn.close()
        self.app.close()


if __name__ == "__main__":
    main(Procrastinate)
