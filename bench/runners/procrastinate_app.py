"""The benchmark's procrastinate app: a no-op task and one that reports when it starts."""

import os

import procrastinate
from common import send_stamp

app = procrastinate.App(
    connector=procrastinate.PsycopgConnector(conninfo=os.environ["BENCH_DATABASE_URL"])
)


@app.task(name="noop")
async def noop() -> None:
    pass


@app.task(name="stamp")
async def stamp(seq: int) -> None:
    send_stamp(seq)
