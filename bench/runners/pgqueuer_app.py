"""The benchmark's pgqueuer factory (``pgq run pgqueuer_app:main``)."""

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from common import send_stamp
from pgqueuer import AsyncpgDriver, Job, PgQueuer


@asynccontextmanager
async def main() -> AsyncIterator[PgQueuer]:
    connection = await asyncpg.connect(os.environ["PGDSN"])
    pgq = PgQueuer(AsyncpgDriver(connection))

    @pgq.entrypoint("noop")
    async def noop(job: Job) -> None:
        pass

    @pgq.entrypoint("stamp")
    async def stamp(job: Job) -> None:
        send_stamp(int(job.payload))

    try:
        yield pgq
    finally:
        await connection.close()


if __name__ == "__main__":
    # What ``pgq run pgqueuer_app:main --batch-size N`` does; the CLI of
    # pgqueuer 1.6.0 fails to parse its own --log-level default under the typer
    # it installs, so the documented library entry point is used instead.
    import sys

    import pgqueuer
    import uvloop

    uvloop.run(pgqueuer.run(main, batch_size=int(sys.argv[1])))
