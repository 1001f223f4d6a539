"""The operations API end to end: two real workers of one app, fed a small firm.

Any worker answers the queue for every partition; an entity is served by the worker
owning its partition and forwarded by the other; actions land on `ops.actions` with
their actor and take effect through the owning flow; Faust's pages are gone and no
token reaches a log.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pssync.api.auth import hash_token
from pssync.avro.contract import CDC_TOPICS
from pssync.connectors.kafka import stable_partition
from pssync.settings import Settings
from tests import scenarios
from tests.conftest import SettingsFactory, WorkerHandle, free_port, launch_worker
from tests.kafka_helpers import collect, create_topics, produce_cli, wait_drained

pytestmark = pytest.mark.kafka

ALICE, DASH = "e2e-alice-token-5f0c", "e2e-dash-token-77a1"
TOKENS = f"ops-alice:read+act:{hash_token(ALICE)};dash:read:{hash_token(DASH)}"
ENTITIES = [("worker", w) for w in ("W1", "W2", "W3", "W4")] + [
    ("project", p) for p in ("P1", "P2", "P3", "P4")
]


class Reply:
    def __init__(self, status: int, headers: dict[str, str], body: Any) -> None:
        self.status = status
        self.headers = headers
        self.body = body


def call(
    worker: WorkerHandle,
    path: str,
    token: str | None = DASH,
    method: str = "GET",
    body: Any = None,
) -> Reply:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(worker.url + path, data=data, method=method)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=20) as resp:
            status, headers, raw = resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        status, headers, raw = exc.code, dict(exc.headers), exc.read()
    try:
        parsed = json.loads(raw) if raw else None
    except ValueError:
        parsed = raw.decode(errors="replace")
    return Reply(status, headers, parsed)


def eventually(what: str, probe: Callable[[], Any], timeout_s: float = 60) -> Any:
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(0.5)
    pytest.fail(f"{what}: not within {timeout_s:.0f}s (last: {last!r})")


def drained(settings: Settings) -> None:
    topics = [settings.topic(t) for t in CDC_TOPICS]
    internal = [settings.internal_topic(t) for t in ("worker-keyed", "project-keyed")]
    wait_drained(settings, topics + internal)


def own_api(settings: Settings, **update: Any) -> Settings:
    """`settings` for a worker of its own: a free port on loopback, advertised there (the
    URL the other workers forward to)."""
    port = free_port()
    local = {
        "web_port": port,
        "web_host": "127.0.0.1",
        "advertised_url": f"http://127.0.0.1:{port}",
    }
    return settings.model_copy(update=local | update)


def feed_scenario(settings: Settings, tmp: Path) -> None:
    """The scenario firm in its two phases, each processed before the next is sent."""
    for phase in (scenarios.reference_and_erp(), scenarios.psa_and_hr()):
        produce_cli(settings, phase, tmp)
        drained(settings)


@pytest.fixture
def two_workers(
    settings_factory: SettingsFactory, tmp_path: Path
) -> Iterator[tuple[WorkerHandle, WorkerHandle]]:
    base = settings_factory(api_tokens=TOKENS, log_level="DEBUG")
    create_topics(base)
    handles: list[WorkerHandle] = []
    try:
        for name in ("a", "b"):
            settings = own_api(base, instance_id=f"api-e2e-{name}", data_dir=base.data_dir / name)
            handles.append(launch_worker(settings, tmp_path / f"worker-{name}.log"))
        for worker in handles:  # both own partitions before any input arrives
            eventually(
                f"{worker.url} owns partitions",
                lambda w=worker: (
                    (r := w.get("/ready"))[0] == 200 and r[1]["assigned_partitions"] > 0
                ),
            )
        yield handles[0], handles[1]
    finally:
        for worker in handles:
            worker.stop()


def open_exceptions(worker: WorkerHandle) -> dict[tuple[str, str], dict[str, Any]]:
    reply = call(worker, "/api/exceptions?state=OPEN&limit=500")
    assert reply.status == 200, reply.body
    return {(r["rule"], r["entity_id"]): r for r in reply.body["items"]}


def test_two_workers_serve_the_firm(
    two_workers: tuple[WorkerHandle, WorkerHandle], tmp_path: Path
) -> None:
    a, b = two_workers
    settings = a.settings
    feed_scenario(settings, tmp_path)

    # -- the queue: each worker answers for every partition ----------------------
    expected = set(scenarios.EXPECTED_EXCEPTIONS)
    for worker in (a, b):
        eventually(
            f"{worker.url} shows the queue", lambda w=worker: set(open_exceptions(w)) == expected
        )
    assert call(a, "/api/exceptions?limit=500").body == call(b, "/api/exceptions?limit=500").body
    # paging: a cursor from one worker continues on the other, oldest first
    seen: list[str] = []
    cursor: str | None = None
    for turn in range(10):
        worker = (a, b)[turn % 2]
        page = call(worker, "/api/exceptions?limit=2" + (f"&cursor={cursor}" if cursor else ""))
        assert page.status == 200, page.body
        seen += [r["exception_id"] for r in page.body["items"]]
        cursor = page.body["next"]
        if cursor is None:
            break
    everything = call(a, "/api/exceptions?limit=500").body["items"]
    assert seen == [r["exception_id"] for r in everything]
    assert [(r["created_at"], r["exception_id"]) for r in everything] == sorted(
        (r["created_at"], r["exception_id"]) for r in everything
    )
    summary = call(b, "/api/summary").body
    assert summary["open_exceptions"]["total"] == len(expected)
    assert sum(summary["open_alerts"]["by_rule"]["PROJECT_MISSING_IN_ERP"].values()) == 2

    # -- entities: served by the owner, forwarded by the other --------------------
    partitions = {stable_partition(i, settings.partitions) for _, i in ENTITIES}
    assert partitions == set(range(settings.partitions))  # the set spans every owner
    servers = set()
    for entity_type, entity_id in ENTITIES:
        path = f"/api/entities/{entity_type}/{entity_id}"
        ra, rb = call(a, path), call(b, path)
        assert (ra.status, rb.status) == (200, 200), (path, ra.body, rb.body)
        assert ra.body == rb.body, path
        owner = ra.headers["X-Pssync-Served-By"]
        assert rb.headers["X-Pssync-Served-By"] == owner
        other = b if owner == a.url else a
        forwarded = ra if other is a else rb
        assert forwarded.headers["X-Pssync-Forwarded-By"] == other.url, path
        servers.add(owner)
    assert servers == {a.url, b.url}
    # a time entry lives with its worker: found by asking around, same answer from both
    ta, tb = call(a, "/api/entities/time_entry/T3"), call(b, "/api/entities/time_entry/T3")
    assert (ta.status, tb.status) == (200, 200), (ta.body, tb.body)
    assert ta.body == tb.body
    assert ta.headers["X-Pssync-Served-By"] == tb.headers["X-Pssync-Served-By"]
    assert call(a, "/api/entities/worker/W404").status == 404
    gate = {"crm_account_id": "ACC2", "legal_entity": "LE1", "currency": "USD"}
    va = call(a, "/api/validate/project", method="POST", body=gate)
    vb = call(b, "/api/validate/project", method="POST", body=gate)
    assert (va.status, vb.status) == (200, 200), (va.body, vb.body)
    assert va.body == vb.body
    assert va.body["passed"] is False

    # -- actions: validated, recorded with the actor, applied by the owner --------
    queue = open_exceptions(a)
    missing_rate = queue[("TIME_MISSING_COST_RATE", "T4")]["exception_id"]
    closed_period = queue[("TIME_IN_CLOSED_PERIOD", "T3")]["exception_id"]
    gate_failed = queue[("PROJECT_GATE_FAILED", "P4")]["exception_id"]
    actions = f"/api/exceptions/{missing_rate}/actions"
    assert call(b, actions, method="POST", body={"action": "dismiss"}).status == 403  # read-only
    reply = call(b, "/api/exceptions/nope/actions", ALICE, "POST", {"action": "dismiss"})
    assert reply.status == 404
    reply = call(
        b,
        f"/api/exceptions/{gate_failed}/actions",
        ALICE,
        "POST",
        {"action": "post_to_next_open_period"},
    )
    assert (reply.status, reply.body["error"]) == (409, "not_applicable")
    assert call(b, actions, ALICE, "POST", {"action": "shred"}).status == 422
    body = {"action": "dismiss", "note": "rate comes next month", "action_id": "e2e-dismiss-1"}
    reply = call(b, actions, ALICE, "POST", body)
    assert (reply.status, reply.body) == (202, {"action_id": "e2e-dismiss-1"})
    reply = call(
        b,
        f"/api/exceptions/{closed_period}/actions",
        ALICE,
        "POST",
        {"action": "post_to_next_open_period", "note": "late timesheet"},
    )
    assert reply.status == 202, reply.body
    post_id = reply.body["action_id"]

    recorded = [r for r in collect(settings, ["ops.actions"], idle_s=1.5)]
    by_id = {r["value"]["action_id"]: r for r in recorded}
    assert len(recorded) == 2
    dismiss = by_id["e2e-dismiss-1"]
    assert dismiss["key"] == "W2"  # the owner's join key (T4 is W2's)
    assert dismiss["partition"] == stable_partition("W2", settings.partitions)
    assert dismiss["headers"]["correlation_id"] == "action:e2e-dismiss-1"
    assert dismiss["value"]["who"] == "ops-alice"
    assert dismiss["value"]["owner"] == "worker:W2"
    assert dismiss["value"]["exception_id"] == missing_rate
    assert by_id[post_id]["value"]["who"] == "ops-alice"

    def dismissed() -> dict[str, Any] | None:
        detail = call(a, f"/api/exceptions/{missing_rate}").body
        outcomes = [h for h in detail["history"] if h["kind"] == "action"]
        return detail if detail["state"] == "DISMISSED" and outcomes else None

    detail = eventually("the dismissal is applied", dismissed)
    assert detail["resolution"]["who"] == "ops-alice"
    assert detail["resolution"]["note"] == "rate comes next month"
    (outcome,) = [h for h in detail["history"] if h["kind"] == "action"]
    assert (outcome["action_id"], outcome["outcome"], outcome["who"]) == (
        "e2e-dismiss-1",
        "APPLIED",
        "ops-alice",
    )
    # a client's retry after it took effect, on the other worker: 202, nothing new
    assert call(a, actions, ALICE, "POST", body).status == 202
    assert call(a, actions, ALICE, "POST", {"action": "dismiss"}).status == 409  # not OPEN
    eventually(
        "the closed-period entry is posted to the next open period",
        lambda: call(b, f"/api/exceptions/{closed_period}").body["state"] == "RESOLVED",
    )
    again = collect(settings, ["ops.actions"], idle_s=1.5)
    assert [r["value"]["action_id"] for r in again].count("e2e-dismiss-1") == 1

    # -- access on the real worker ------------------------------------------------
    for worker in (a, b):
        for path in ("/health", "/ready", "/metrics"):
            assert call(worker, path, token=None).status == 200, path
        for path in ("/router/", "/router/workers/", "/table/", "/", "/stats", "/api/summary"):
            reply = call(worker, path, token=None)
            assert reply.status == 401, path
            assert reply.body["error"] == "unauthenticated"
        for path in ("/router/", "/router/workers/", "/table/", "/"):  # Faust's pages: gone
            assert call(worker, path).status == 404, path
        assert call(worker, "/stats").status == 200
        assert call(worker, "/api/summary", token="not-a-token").status == 401
    log = a.log(tail=0) + b.log(tail=0)
    assert "operations API on /api: tokens ops-alice, dash" in log
    for secret in (ALICE, DASH):
        assert secret not in log
