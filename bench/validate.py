"""Validation on demand under load: `python -m bench.validate [--requests 1000]`.

A firm is simulated into fresh topics, one worker reconciles it, then rounds of
`--requests` concurrent `POST /api/validate/project` requests (all in flight at
once, on loopback, one connection each) ask the governance gate about the firm's
real accounts, a mix that passes and fails. In the same round the same number of
concurrent `GET /health` requests measures the floor: the web server and the
loopback with no auth, no state read and no rule. The report gives per-request
latency (p50, p99, max; the median over rounds) for both, and validation's p99 as
a ratio to the floor's, so a noisy shared machine moves both alike. Every answer
must be 200 with every gate check; an error fails the run.

The worker's per-token rate limit is raised for the run (PSSYNC_API_RATE_PER_S,
PSSYNC_API_BURST): it is the server's latency under concurrency that is measured,
not the limiter's refusals.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import hashlib
import json
import platform
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench.backlog import simulate
from bench.kafka_io import read_all
from bench.speed import Worker, settings_for
from pssync.app import prepare
from pssync.avro.codec import load_schema_text
from pssync.avro.jsonform import JsonForm
from pssync.settings import Settings

CUSTOMERS = "cdc.erp.customer"


def say(msg: str) -> None:
    print(f"[validate] {msg}", file=sys.stderr, flush=True)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def accounts(settings: Settings) -> list[dict[str, Any]]:
    """Request bodies from the firm's ERP customers: as they are (most pass) and with
    the currency changed (the gate fails)."""
    codec = prepare(settings)
    form = JsonForm(json.loads(load_schema_text(CUSTOMERS, "value")))
    bodies = []
    for msg in read_all(settings, [settings.topic(CUSTOMERS)]):
        value = form.to_json(codec.decode_value(CUSTOMERS, msg.value()))
        after = value.get("after")
        if after:
            body = {k: after[k] for k in ("crm_account_id", "legal_entity", "currency")}
            bodies.append(body)
            bodies.append(body | {"currency": "XXX"})
    if not bodies:
        raise SystemExit("the simulated firm has no customers")
    return bodies


async def burst(
    session: aiohttp.ClientSession, url: str, n: int, body_of: Any, token: str | None
) -> tuple[list[float], list[str]]:
    """`n` requests in flight at once; their latencies (s) and any errors."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    start = asyncio.Event()

    async def one(i: int) -> tuple[float, str | None]:
        await start.wait()
        began = time.perf_counter()
        body = body_of(i)
        try:
            if body is None:
                async with session.get(url, headers=headers) as resp:
                    await resp.read()
                    ok = resp.status == 200
                    problem = None if ok else f"{resp.status}"
            else:
                async with session.post(url, json=body, headers=headers) as resp:
                    answer = await resp.json()
                    ok = resp.status == 200 and len(answer.get("checks", ())) >= 5
                    problem = None if ok else f"{resp.status} {str(answer)[:200]}"
        except (TimeoutError, aiohttp.ClientError) as exc:
            problem = f"{type(exc).__name__}: {exc}"
        return time.perf_counter() - began, problem

    tasks = [asyncio.create_task(one(i)) for i in range(n)]
    await asyncio.sleep(0.05)  # every request waits at the line
    start.set()
    results = await asyncio.gather(*tasks)
    return [r[0] for r in results], [r[1] for r in results if r[1]]


async def measure(worker: Worker, token: str, bodies: list[dict[str, Any]], args: Any) -> Any:
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    timeout = aiohttp.ClientTimeout(total=120)
    rounds: list[dict[str, Any]] = []
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        for r in range(args.rounds):
            # alternate which goes first, so neither always meets a warmer server
            order = ["validate", "health"] if r % 2 == 0 else ["health", "validate"]
            row: dict[str, Any] = {}
            for kind in order:
                if kind == "validate":
                    url, body_of, auth = (
                        worker.url("/api/validate/project"),
                        lambda i: bodies[i % len(bodies)],
                        token,
                    )
                else:
                    url, body_of, auth = worker.url("/health"), lambda i: None, None
                latencies, errors = await burst(session, url, args.requests, body_of, auth)
                if errors:
                    raise SystemExit(f"{kind}: {len(errors)} errors, e.g. {errors[:3]}")
                row[kind] = {
                    "p50_ms": 1000 * percentile(latencies, 0.50),
                    "p99_ms": 1000 * percentile(latencies, 0.99),
                    "max_ms": 1000 * max(latencies),
                }
            say(
                f"round {r + 1}: validate p99 {row['validate']['p99_ms']:.0f} ms, "
                f"health p99 {row['health']['p99_ms']:.0f} ms"
            )
            rounds.append(row)
    return rounds


def summary(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind in ("validate", "health"):
        out[kind] = {
            stat: statistics.median(r[kind][stat] for r in rounds)
            for stat in ("p50_ms", "p99_ms", "max_ms")
        }
    out["p99_ratio"] = out["validate"]["p99_ms"] / out["health"]["p99_ms"]
    return out


def report(args: Any, result: dict[str, Any], rounds: int) -> str:
    v, h = result["validate"], result["health"]
    return "\n".join(
        [
            f"# Validation on demand: {args.requests} concurrent requests",
            "",
            f"`python -m bench.validate --requests {args.requests} --rounds {rounds}`, "
            f"{dt.date.today()}, {platform.machine()}, {platform.python_version()}; "
            "loopback, one connection per request; median of the rounds.",
            "",
            "| requests | p50 | p99 | max |",
            "|---|---|---|---|",
            f"| POST /api/validate/project | {v['p50_ms']:.0f} ms | {v['p99_ms']:.0f} ms "
            f"| {v['max_ms']:.0f} ms |",
            f"| GET /health (the floor) | {h['p50_ms']:.0f} ms | {h['p99_ms']:.0f} ms "
            f"| {h['max_ms']:.0f} ms |",
            "",
            f"Validation's p99 is {result['p99_ratio']:.2f}x the floor's in the same run.",
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.validate",
        description="p99 latency of POST /api/validate/project with many concurrent "
        "requests, against GET /health's in the same run.",
    )
    parser.add_argument("--requests", type=int, default=1000, help="in flight at once")
    parser.add_argument("--rounds", type=int, default=5, help="the report takes the median")
    parser.add_argument("--workers", type=int, default=30, help="the simulated firm's size")
    parser.add_argument("--customers", type=int, default=6)
    parser.add_argument("--count", type=int, default=3000, help="CDC records to simulate")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--results", type=Path, help="write <dir>/validate-<date>.md/.json")
    args = parser.parse_args(argv)
    token = secrets.token_urlsafe(24)
    tokens = f"bench:read:{hashlib.sha256(token.encode()).hexdigest()}"
    with tempfile.TemporaryDirectory(prefix="pssync-validate-") as tmp:
        root = Path(tmp)
        settings = settings_for("validate", root, source_idle_s=0.5, tick_interval_s=0.2)
        settings = settings.model_copy(
            update={"api_tokens": tokens, "api_rate_per_s": 1e6, "api_burst": 10**6}
        )
        say(f"simulating {args.count} records into {settings.topic_prefix}* ...")
        sim = argparse.Namespace(
            seed=args.seed, workers=args.workers, customers=args.customers, count=args.count
        )
        simulate(settings, sim, 0, root / "truth.jsonl")
        bodies = accounts(settings)
        worker = Worker(settings, root / "worker.log")
        worker.token = token
        try:
            worker.wait_ready()
            worker.wait_settled(timeout_s=600)
            say(f"settled; {args.rounds} rounds of {args.requests} concurrent requests")
            rounds = asyncio.run(measure(worker, token, bodies, args))
        finally:
            worker.stop()
    result = summary(rounds) | {"requests": args.requests, "rounds": rounds}
    text = report(args, result, args.rounds)
    print(text)
    if args.results:
        args.results.mkdir(parents=True, exist_ok=True)
        stem = args.results / f"validate-{dt.datetime.now():%Y-%m-%d-%H%M}"
        stem.with_suffix(".md").write_text(text)
        stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
        say(f"wrote {stem}.md and .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
