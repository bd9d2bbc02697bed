"""The web app under load: simulated annotators answering one queue at the same time.

``--users`` (50) simulated annotators, each an async httpx client with its own session, sign
in through the JSON API, then for ``--seconds`` (60) each one asks for its next item
(``GET /api/queues/ID/next``) and submits an answer to it (``POST .../items/ITEM/answer``),
again and again, against the real ``tuneloop web`` (uvicorn, one process) on 127.0.0.1.
With ``--think-ms 0`` (the default) they do not pause, so every user always has a request in
flight; ``--think-ms N`` pauses before each submit for a random time with mean N ms
(exponential), as a person reading the item would.

The database is prepared before the clock starts: a classification dataset of ``--items``
records imported with ``tuneloop data import``, ``--users`` annotators, and one label queue
over all the records, with ``--per-item`` (2) distinct people per item and every annotator a
member. SQLite is a fresh file (the default); with ``--db postgresql://...`` everything goes
into a new schema of that database, dropped at the end.

Measured: requests per second (next and submit, all users, over the run), the p50/p95/p99
latency of submit and of next as the clients see it; then, from the database: answers lost (a
submit answered 200 whose answer is not stored with its value), duplicated (one person with
two answers to one item), items over their quota (more answers than people per item), and
answers stored whose submit failed on the client's side (a timeout); also 409s (the item had
its answers already) and errors. Clients and server share the machine.

Targets: p95 of submit under 100 ms; nothing lost, duplicated or over quota.

    .venv/bin/python bench/web_load.py                                    # SQLite, 50 users, 60 s
    .venv/bin/python bench/web_load.py --db postgresql://USER:PASSWORD@127.0.0.1:5432/DB
    .venv/bin/python bench/web_load.py --write                            # also bench/README.md
    .venv/bin/python bench/web_load.py --seconds 5 --users 5 --items 500  # a quick check
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
from machine import cpu_model

README = Path(__file__).with_name("README.md")
HEADING = "## The web app under load: `web_load.py`"
START = "<!-- web-load-results:start -->"
END = "<!-- web-load-results:end -->"
COLUMNS = (
    "database",
    "users",
    "think",
    "seconds",
    "requests/s",
    "submits",
    "submit p50",
    "submit p95",
    "submit p99",
    "next p95",
    "409s",
    "errors",
    "lost",
    "duplicated",
    "over quota",
    "target",
    "measured",
)
KEY_COLUMNS = 3  # a run replaces the README row of the same database, users and think time
TARGET_P95_MS = 100.0
PASSWORD = "web load bench 0123"
LABELS = ("pos", "neg")
WORDS = ("plot", "acting", "score", "pacing", "ending", "cast", "script", "scenes", "camera")


def tuneloop_exe() -> str:
    found = shutil.which("tuneloop", path=str(Path(sys.executable).parent))
    return found or shutil.which("tuneloop") or "tuneloop"


def run(cmd: list[str]) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.stderr.write(done.stdout + done.stderr)
        raise SystemExit(f"failed ({done.returncode}): {' '.join(cmd)}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- the database ----------------------------------------------------------------------------


@contextmanager
def database(url: str | None, work: Path) -> Iterator[tuple[str, str]]:
    """(URL, description) of a fresh database: a SQLite file in ``work``, or a new schema of
    the PostgreSQL database at ``url``, dropped at the end."""
    if url is None:
        yield f"sqlite:///{work / 'web_load.db'}", f"SQLite {sqlite3.sqlite_version}"
        return
    if not url.startswith(("postgresql://", "postgres://", "postgresql+psycopg://")):
        raise SystemExit("--db takes a postgresql:// URL (without it the run is on SQLite)")
    from sqlalchemy import create_engine, text

    from tuneloop.store.db import normalize_url

    schema = f"tuneloop_web_load_{os.getpid()}"
    engine = create_engine(normalize_url(url))
    try:
        with engine.begin() as conn:
            version = str(conn.execute(text("SHOW server_version")).scalar_one()).split()[0]
            conn.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
            conn.execute(text(f"CREATE SCHEMA {schema}"))
        separator = "&" if "?" in url else "?"
        yield f"{url}{separator}options=-csearch_path%3D{schema}", f"PostgreSQL {version}"
    finally:
        with engine.begin() as conn:
            conn.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
        engine.dispose()


def prepare(
    db_url: str, work: Path, users: int, items: int, per_item: int
) -> tuple[int, list[str]]:
    """Records, annotators and the queue; (queue id, usernames)."""
    from tuneloop.store.db import open_store
    from tuneloop.workflows.queue_items import dataset_items
    from tuneloop.workflows.queues import QueueSpec, create_queue
    from tuneloop.workflows.users import add_user

    rng = random.Random(0)
    data = work / "reviews.jsonl"
    with data.open("w") as f:
        for i in range(items):
            text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(12, 30)))
            row = {"id": f"r{i}", "text": f"review {i}: {text}", "label": rng.choice(LABELS)}
            f.write(json.dumps(row) + "\n")
    options = ["--name", "reviews", "--task", "classification", "--labels", ",".join(LABELS)]
    run([tuneloop_exe(), "--db", db_url, "data", "import", str(data), *options, "--dedupe", "none"])
    store = open_store(db_url)
    try:
        names = [f"annotator{i:03d}" for i in range(users)]
        for name in names:
            add_user(store, name, "annotator", PASSWORD)
        spec = QueueSpec(
            "web-load", "label", dataset="reviews", annotators_per_item=per_item, members=names
        )
        queue = create_queue(store, spec, dataset_items(store, "reviews"))
        return queue.id, names
    finally:
        store.dispose()


# --- the server ------------------------------------------------------------------------------


@contextmanager
def serving(db_url: str, log: Path) -> Iterator[str]:
    """``tuneloop web`` on a free port; its base URL while it runs."""
    port = free_port()
    with log.open("w") as out:
        server = subprocess.Popen(
            [tuneloop_exe(), "--db", db_url, "web", "--host", "127.0.0.1", "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"{base}/login", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"tuneloop web did not start:\n{log.read_text()[-3000:]}")
                time.sleep(0.2)
            yield base
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


# --- the simulated annotators ------------------------------------------------------------------


@dataclass
class Tally:
    submit_ms: list[float] = field(default_factory=list)
    next_ms: list[float] = field(default_factory=list)
    requests: int = 0
    conflicts: int = 0  # 409: the item had its answers already
    ran_out: int = 0  # users who found nothing left to answer
    errors: Counter[str] = field(default_factory=Counter)
    acknowledged: list[tuple[str, int, str, int]] = field(default_factory=list)
    # (username, item id, label, answer id) of every submit answered 200


async def sign_in(client: httpx.AsyncClient, name: str) -> None:
    response = await client.post("/api/login", json={"username": name, "password": PASSWORD})
    response.raise_for_status()
    client.headers["X-CSRF-Token"] = response.json()["csrf_token"]


async def annotator(
    client: httpx.AsyncClient,
    name: str,
    queue_id: int,
    deadline: float,
    think_ms: float,
    rng: random.Random,
    tally: Tally,
) -> None:
    while time.monotonic() < deadline:
        start = time.perf_counter()
        try:
            response = await client.get(f"/api/queues/{queue_id}/next")
        except httpx.HTTPError as exc:
            tally.errors[f"next: {type(exc).__name__}"] += 1
            await asyncio.sleep(0.05)
            continue
        tally.next_ms.append((time.perf_counter() - start) * 1000)
        tally.requests += 1
        if response.status_code != 200:
            tally.errors[f"next: {response.status_code}"] += 1
            await asyncio.sleep(0.05)
            continue
        item = response.json()["item"]
        if item is None:
            tally.ran_out += 1
            return
        if think_ms > 0:
            await asyncio.sleep(rng.expovariate(1000.0 / think_ms))
        label = rng.choice(LABELS)
        url = f"/api/queues/{queue_id}/items/{item['item_id']}/answer"
        start = time.perf_counter()
        try:
            response = await client.post(url, json={"value": {"label": label}})
        except httpx.HTTPError as exc:
            tally.errors[f"submit: {type(exc).__name__}"] += 1
            continue
        tally.submit_ms.append((time.perf_counter() - start) * 1000)
        tally.requests += 1
        if response.status_code == 200:
            tally.acknowledged.append((name, item["item_id"], label, response.json()["answer_id"]))
        elif response.status_code == 409:
            tally.conflicts += 1
        else:
            tally.errors[f"submit: {response.status_code}"] += 1


async def load(
    base: str, queue_id: int, names: list[str], seconds: float, think_ms: float
) -> tuple[Tally, float]:
    """Sign everyone in, then let them answer for ``seconds``; (tally, elapsed seconds)."""
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    clients = [httpx.AsyncClient(base_url=base, timeout=30.0, limits=limits) for _ in names]
    try:
        await asyncio.gather(*(sign_in(c, n) for c, n in zip(clients, names, strict=True)))
        tally = Tally()
        start = time.perf_counter()
        deadline = time.monotonic() + seconds
        await asyncio.gather(
            *(
                annotator(c, n, queue_id, deadline, think_ms, random.Random(i), tally)
                for i, (c, n) in enumerate(zip(clients, names, strict=True))
            )
        )
        return tally, time.perf_counter() - start
    finally:
        await asyncio.gather(*(c.aclose() for c in clients))


# --- what the database holds -------------------------------------------------------------------


@dataclass
class Check:
    stored: int
    lost: int  # acknowledged, but not stored with its value
    duplicated: int  # a second answer of one person to one item
    over_quota: int  # answers beyond the queue's people per item
    unacknowledged: int  # stored, though the client saw its submit fail


def check(db_url: str, queue_id: int, per_item: int, tally: Tally) -> Check:
    from sqlalchemy import select

    from tuneloop.store.db import open_store
    from tuneloop.store.models import Answer, QueueItem, User

    store = open_store(db_url)
    try:
        with store.transaction() as session:
            rows = session.execute(
                select(Answer.id, Answer.queue_item_id, User.username, Answer.value)
                .join(User, User.id == Answer.user_id)
                .join(QueueItem, QueueItem.id == Answer.queue_item_id)
                .where(QueueItem.queue_id == queue_id)
            ).all()
    finally:
        store.dispose()
    stored = {(name, item): (answer_id, value) for answer_id, item, name, value in rows}
    lost = sum(
        stored.get((name, item)) != (answer_id, {"label": label})
        for name, item, label, answer_id in tally.acknowledged
    )
    per_item_counts = Counter(item for _, item, _, _ in rows)
    seen = {(name, item) for name, item, _, _ in tally.acknowledged}
    return Check(
        stored=len(rows),
        lost=lost,
        duplicated=len(rows) - len(stored),
        over_quota=sum(max(0, n - per_item) for n in per_item_counts.values()),
        unacknowledged=len(set(stored) - seen),
    )


# --- the report --------------------------------------------------------------------------------


def percentiles(values: list[float]) -> tuple[float, float, float]:
    """p50, p95, p99 (nan when there are fewer than two values)."""
    if len(values) < 2:
        return (float("nan"),) * 3
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return cuts[49], cuts[94], cuts[98]


def row(
    db: str, users: int, think_ms: float, elapsed: float, tally: Tally, found: Check
) -> list[str]:
    p50, p95, p99 = percentiles(tally.submit_ms)
    _, next95, _ = percentiles(tally.next_ms)
    met = p95 < TARGET_P95_MS and found.lost == found.duplicated == found.over_quota == 0
    load_avg = os.getloadavg()[0]
    measured = (
        f"{datetime.now(UTC):%Y-%m-%d}, {cpu_model()}, {os.cpu_count()} CPUs, "
        f"load {load_avg:.2f} after"
    )
    return [
        db,
        str(users),
        f"{think_ms:g} ms",
        f"{elapsed:.0f}",
        f"{tally.requests / elapsed:,.0f}",
        f"{len(tally.acknowledged):,}",
        f"{p50:.1f} ms",
        f"{p95:.1f} ms",
        f"{p99:.1f} ms",
        f"{next95:.1f} ms",
        str(tally.conflicts),
        str(sum(tally.errors.values())),
        str(found.lost),
        str(found.duplicated),
        str(found.over_quota),
        "met" if met else "NOT met",
        measured,
    ]


def table(rows: list[list[str]]) -> str:
    head = "| " + " | ".join(COLUMNS) + " |"
    rule = "|---|" + "---:|" * (len(COLUMNS) - 3) + "---|---|"
    return "\n".join([head, rule, *("| " + " | ".join(r) + " |" for r in rows)])


def write_readme(new: list[str]) -> None:
    """Put the run's row into the results table (replacing the row of the same database,
    users and think time; other rows stay)."""
    text = README.read_text()
    rows: list[list[str]] = []
    if START in text:
        block = text.split(START, 1)[1].split(END, 1)[0]
        for line in block.splitlines():
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if line.startswith("| ") and len(cells) == len(COLUMNS) and cells[0] != COLUMNS[0]:
                rows.append(cells)
    rows = [r for r in rows if r[:KEY_COLUMNS] != new[:KEY_COLUMNS]] + [new]
    section = f"{START}\n{table(rows)}\n{END}"
    if START in text:
        pattern = re.escape(START) + ".*?" + re.escape(END)
        text = re.sub(pattern, lambda _: section, text, flags=re.S)
    else:
        text = text.rstrip() + f"\n\n{HEADING}\n\n{section}\n"
    README.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--db", help="postgresql://... (a new schema there); default SQLite")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long they answer (60)")
    parser.add_argument("--users", type=int, default=50, help="simulated annotators (50)")
    parser.add_argument("--items", type=int, default=20_000, help="items in the queue (20000)")
    parser.add_argument("--per-item", type=int, default=2, help="people per item (2)")
    parser.add_argument(
        "--think-ms", type=float, default=0.0, help="mean pause before a submit (0: none)"
    )
    parser.add_argument("--workdir", type=Path, help="keep the data, database and server log")
    parser.add_argument("--write", action="store_true", help="update bench/README.md")
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="tuneloop-web-load-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        with database(args.db, work) as (db_url, db_name):
            started = time.perf_counter()
            queue_id, names = prepare(db_url, work, args.users, args.items, args.per_item)
            print(
                f"prepared {args.items} items and {args.users} annotators on {db_name} "
                f"in {time.perf_counter() - started:.0f} s"
            )
            with serving(db_url, work / "server.log") as base:
                tally, elapsed = asyncio.run(
                    load(base, queue_id, names, args.seconds, args.think_ms)
                )
            found = check(db_url, queue_id, args.per_item, tally)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    new = row(db_name, args.users, args.think_ms, elapsed, tally, found)
    print(table([new]))
    print(
        f"{found.stored} answers stored, {len(tally.acknowledged)} acknowledged, "
        f"{found.unacknowledged} stored without an acknowledgement; "
        f"{tally.ran_out} users ran out of items"
    )
    if tally.errors:
        print("errors:", dict(tally.errors))
    if args.write:
        write_readme(new)
        print(f"updated {README}")


if __name__ == "__main__":
    main()
