"""The pure logic of the Quix Streams benchmark peer (`bench/peers/quix_worker.py`).

No Kafka and no Quix Streams here: the topic names and output kinds, the projections of
CDC after-images into the peer's state (`WORKER_SHAPES`), the counters (`PeerStats`), ERP
projects and periods as version histories by source time (`ReferenceData`), the cost
rate lookup (`rate_on`), money and command-id helpers, and the worker-keyed stateful step
(`WorkerLogic`), which takes one re-keyed change and the worker's state store and returns
the commands and alerts it causes. `quix_worker` decodes, orders and routes the input
records and runs this step in a Quix Streams application.

What it computes (shared/domain.md, as `streams/rules/workers.py` and
`streams/rules/time_entries.py` do):

- `WORKER_MISSING_IN_ERP`: an HR worker ACTIVE or on LEAVE with no ERP employee linked
  by worker_id -> alert (INFO);
- `WORKER_FIELD_DRIFT`: a linked ERP employee's cost_center or legal_entity differs from
  HR's (worker not TERMINATED) -> alert (WARNING);
  both alerts are emitted OPEN when the condition starts and RESOLVED when it ends
  (`alert_id` = rule:worker);
- `POST_TIME_ENTRY`: an APPROVED time entry whose worker is known to HR and employed on
  work_date, has an ERP employee, whose project has an ACTIVE ERP project, whose period
  (the ERP project's legal entity, work_date's month) is OPEN and that has a cost rate
  effective on work_date (the latest-starting rate covering the day) -> one command with
  hours x rate half-up to cents; an entry changed (project, date, hours, billable) after
  posting gets REVERSE_TIME_ENTRY and a new POST, one rejected or deleted after posting
  a REVERSE_TIME_ENTRY. An entry that cannot post yet is parked in the worker's state and
  evaluated again when the worker's HR record, ERP employees or cost rates change (and,
  when it waits for reference data, on the worker's next time entry).

Per-worker state (a key-value store; Quix's RocksDB state in the peer): `w` (HR record,
ERP employees, cost rates, open alerts), `te:<id>` (the entry and what is posted),
`parked`. Redelivered or out-of-date versions are dropped by source `lsn` (else `ts_ms`)
per source row, as pssync does.

Simplifications versus pssync (it is a baseline, not a second implementation):

- ERP projects and periods (not keyed by worker) are kept as version histories by
  source time; an entry sees the ERP project's and the period's status as of its own
  source time, or the first later version that satisfies the rule (pssync parks and
  evaluates again when the dependency changes).
- No cost-center gate, UPSERT_EMPLOYEE/DEACTIVATE_EMPLOYEE commands, exceptions
  (TIME_*, WORKER_INVALID_COST_CENTER, DEPENDENCY_TIMEOUT), other worker rules,
  timers or golden records. The contract's enum checks are not made.
- Command IDs are deterministic (action, entry, source position).
"""

from __future__ import annotations

import bisect
import datetime as dt
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Protocol

Record = dict[str, Any]

HR = "cdc.hr.worker"
EMP = "cdc.erp.employee"
RATE = "cdc.erp.cost_rate"
TE = "cdc.psa.time_entry"
PROJECT = "cdc.erp.project"
PERIOD = "cdc.erp.period"
WORKER_TOPICS = (HR, EMP, RATE, TE)
REFERENCE_TOPICS = (PROJECT, PERIOD)
INPUT_TOPICS = WORKER_TOPICS + REFERENCE_TOPICS
OUT_TOPIC = "peer.out"

POST = "POST_TIME_ENTRY"
REVERSE = "REVERSE_TIME_ENTRY"
MISSING = "WORKER_MISSING_IN_ERP"
DRIFT = "WORKER_FIELD_DRIFT"
RULES = (MISSING, DRIFT)
SEVERITY = {MISSING: "INFO", DRIFT: "WARNING"}
REMEDIATION = {
    MISSING: "Create the employee in the ERP from the HR worker (UPSERT_EMPLOYEE).",
    DRIFT: "HR owns cost center and legal entity: correct the ERP employee from HR.",
}
STAFFED = frozenset({"ACTIVE", "LEAVE"})
# park reasons that depend on reference data (ERP projects, periods), not on the worker
REFERENCE_WAITS = frozenset({"reference", "closed"})
CENT = Decimal("0.01")


class StateStore(Protocol):
    """The per-key state the worker step needs (Quix Streams' `State` is one)."""

    def get(self, key: str) -> Any: ...

    def set(self, key: str, value: Any) -> None: ...

    def delete(self, key: str) -> None: ...


# -- record shaping ------------------------------------------------------------------
def _day(value: dt.date | None) -> str | None:
    return None if value is None else value.isoformat()


def _hr(a: Record) -> Record:
    return {
        "st": a["employment_status"],
        "hire": _day(a["hire_date"]),
        "term": _day(a.get("termination_date")),
        "cc": a.get("cost_center"),
        "le": a["legal_entity"],
    }


def _emp(a: Record) -> Record:
    return {"act": bool(a["is_active"]), "cc": a.get("cost_center"), "le": a["legal_entity"]}


def _rate(a: Record) -> Record:
    return {
        "from": _day(a["effective_from"]),
        "to": _day(a.get("effective_to")),
        "rate": str(a["rate"]),
        "cur": a["currency"],
    }


def _entry(a: Record) -> Record:
    return {
        "p": a["project_id"],
        "d": _day(a["work_date"]),
        "h": str(a["hours"]),
        "b": bool(a["billable"]),
        "s": a["status"],
    }


# topic -> (kind, row id field, projection of an after-image)
WORKER_SHAPES: dict[str, tuple[str, str, Callable[[Record], Record]]] = {
    HR: ("hr", "worker_id", _hr),
    EMP: ("emp", "erp_employee_id", _emp),
    RATE: ("rate", "rate_id", _rate),
    TE: ("te", "time_entry_id", _entry),
}


# -- counters ------------------------------------------------------------------------
@dataclass
class PeerStats:
    records: int = 0
    routed: int = 0
    processed: int = 0
    dlq: int = 0
    tombstones: int = 0
    unroutable: int = 0
    duplicates: int = 0
    first_t: float | None = None
    last_t: float | None = None
    outputs: Counter[str] = field(default_factory=Counter)
    resolved: Counter[str] = field(default_factory=Counter)
    open: dict[str, set[str]] = field(default_factory=lambda: {r: set() for r in RULES})


# -- reference data: version histories by source time -------------------------------
def _insert(history: list[tuple[int, int, Any]], ts: int, lsn: int, rec: Any) -> None:
    if any(v[1] == lsn and v[0] == ts for v in history):
        return  # redelivered
    bisect.insort(history, (ts, lsn, rec), key=lambda v: (v[0], v[1]))


def _from(history: list[tuple[int, int, Any]], at: int) -> list[tuple[int, int, Any]]:
    """The version in effect at `at` (if any) and every later one, earliest first."""
    i = bisect.bisect_right(history, at, key=lambda v: v[0])
    return history[max(i - 1, 0) :]


class ReferenceData:
    """ERP projects and periods as version histories (this process's own copy)."""

    def __init__(self) -> None:
        self.projects: dict[str, list[tuple[int, int, Any]]] = {}
        self.by_psa: dict[str, set[str]] = {}
        self.periods: dict[str, list[tuple[int, int, Any]]] = {}

    def add(self, topic: str, env: Record, ts: int, lsn: int) -> None:
        after, before = env.get("after"), env.get("before")
        image = after or before
        if image is None:
            return
        if topic == PROJECT:
            erp_id = image["erp_project_id"]
            rec = (
                None
                if after is None
                else {
                    "pid": after.get("project_id"),
                    "st": after["status"],
                    "le": after["legal_entity"],
                }
            )
            _insert(self.projects.setdefault(erp_id, []), ts, lsn, rec)
            for img in (after, before):
                if img and img.get("project_id"):
                    self.by_psa.setdefault(img["project_id"], set()).add(erp_id)
        else:
            status = None if after is None else after["status"]
            _insert(self.periods.setdefault(image["period_id"], []), ts, lsn, status)

    def active_project(self, project_id: str, at: int) -> tuple[int, str, Record] | None:
        """(since, erp id, ERP project) of the first ACTIVE ERP project linked to the PSA
        project in effect at `at` or later; None if there is none (yet)."""
        best: tuple[int, str, Record] | None = None
        for erp_id in self.by_psa.get(project_id, ()):
            for ts, _, rec in _from(self.projects[erp_id], at):
                if rec and rec["pid"] == project_id and rec["st"] == "ACTIVE":
                    cand = (max(ts, at), erp_id, rec)
                    if best is None or cand[:2] < best[:2]:
                        best = cand
                    break
        return best

    def period_open(self, period_id: str, at: int) -> bool | None:
        """True if the period is OPEN at `at` or later, False if not, None if unknown."""
        history = self.periods.get(period_id)
        if not history:
            return None
        return any(status == "OPEN" for _, _, status in _from(history, at))


# -- the worker-keyed logic ------------------------------------------------------
def _newer(prev: Record | None, lsn: int | None, ts: int | None) -> bool:
    if prev is None:
        return True
    if lsn is not None and prev.get("lsn") is not None:
        return bool(lsn > prev["lsn"])
    if ts is not None and prev.get("ts") is not None:
        return bool(ts > prev["ts"])
    return True


def rate_on(rates: dict[str, Record], day: str) -> tuple[str, Record] | None:
    """The cost rate effective on `day`: the latest-starting one covering it (as
    `streams.rules.money.rate_on`)."""
    best: tuple[str, Record] | None = None
    for rate_id, version in rates.items():
        rate = version["a"]
        if rate is None or rate["from"] > day or (rate["to"] is not None and day > rate["to"]):
            continue
        if best is None or (rate["from"], rate_id) > (best[1]["from"], best[0]):
            best = (rate_id, rate)
    return best


def _essentials(rec: Record) -> list[Any]:
    return [rec["p"], rec["d"], str(Decimal(rec["h"]).normalize()), rec["b"]]


def _money(value: str | Decimal) -> str:
    return str(Decimal(value).quantize(CENT, rounding=ROUND_HALF_UP))


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _command_id(*parts: Any) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "peer:" + "|".join(str(p) for p in parts)))


class WorkerLogic:
    """The stateful step: one re-keyed change in, the commands and alerts it causes out."""

    def __init__(self, stats: PeerStats, ref: ReferenceData) -> None:
        self.stats = stats
        self.ref = ref

    def step(self, msg: Record, state: StateStore) -> list[Record]:
        self.stats.processed += 1
        out: list[Record] = []
        w: Record = state.get("w") or {"hr": None, "emp": {}, "rates": {}, "open": []}
        parked: dict[str, str] = state.get("parked") or {}
        was_parked = dict(parked)
        worker_id = msg["w"]
        if msg["k"] == "te":
            self._on_entry(worker_id, msg, state, w, parked, out)
            for te_id, reason in list(parked.items()):
                if reason in REFERENCE_WAITS and te_id != msg["r"]:
                    self._retry(worker_id, te_id, state, w, parked, out)
        elif self._on_fact(msg, w):
            self._findings(worker_id, w, out)
            for te_id in list(parked):
                self._retry(worker_id, te_id, state, w, parked, out)
            state.set("w", w)
        else:
            self.stats.duplicates += 1
        if parked != was_parked:
            if parked:
                state.set("parked", parked)
            else:
                state.delete("parked")
        return out

    # facts ---------------------------------------------------------------------
    def _on_fact(self, msg: Record, w: Record) -> bool:
        version = {"lsn": msg["lsn"], "ts": msg["ts"], "a": msg["a"]}
        if msg["k"] == "hr":
            if not _newer(w["hr"], msg["lsn"], msg["ts"]):
                return False
            w["hr"] = version
            return True
        rows = w["emp" if msg["k"] == "emp" else "rates"]
        if not _newer(rows.get(msg["r"]), msg["lsn"], msg["ts"]):
            return False
        rows[msg["r"]] = version
        return True

    def _findings(self, worker_id: str, w: Record, out: list[Record]) -> None:
        hr = w["hr"]["a"] if w["hr"] else None
        linked = [v["a"] for v in w["emp"].values() if v["a"] is not None]
        now: set[str] = set()
        fields: dict[str, list[Record]] = {}
        if hr is not None:
            if hr["st"] in STAFFED and not linked:
                now.add(MISSING)
                fields[MISSING] = [
                    {"field": "erp_employee_id", "owner": "ERP", "HR": worker_id, "ERP": None}
                ]
            if hr["st"] != "TERMINATED":
                diffs = [
                    {"field": name, "owner": "HR", "HR": hr[short], "ERP": erp[short]}
                    for erp in linked
                    for name, short in (("cost_center", "cc"), ("legal_entity", "le"))
                    if hr[short] != erp[short]
                ]
                if diffs:
                    now.add(DRIFT)
                    fields[DRIFT] = diffs
        was = set(w["open"])
        for rule in RULES:
            if (rule in now) == (rule in was):
                continue
            state = "OPEN" if rule in now else "RESOLVED"
            at = _now()
            out.append(
                {
                    "kind": "alert",
                    "alert_id": f"{rule}:{worker_id}",
                    "rule": rule,
                    "severity": SEVERITY[rule],
                    "state": state,
                    "entity_type": "worker",
                    "entity_id": worker_id,
                    "fields": fields.get(rule, []),
                    "detected_at": at,
                    "resolved_at": at if state == "RESOLVED" else None,
                    "remediation": REMEDIATION[rule],
                }
            )
            if state == "OPEN":
                self.stats.outputs[rule] += 1
                self.stats.open[rule].add(worker_id)
            else:
                self.stats.resolved[rule] += 1
                self.stats.open[rule].discard(worker_id)
        w["open"] = sorted(now)

    # time entries -----------------------------------------------------------------
    def _on_entry(
        self,
        worker_id: str,
        msg: Record,
        state: StateStore,
        w: Record,
        parked: dict[str, str],
        out: list[Record],
    ) -> None:
        key = "te:" + msg["r"]
        entry: Record | None = state.get(key)
        if entry is not None and not _newer(entry, msg["lsn"], msg["ts"]):
            self.stats.duplicates += 1
            return
        entry = entry or {"posted": None, "n": 0}
        entry.update(lsn=msg["lsn"], ts=msg["ts"], a=msg["a"])
        self._evaluate(worker_id, msg["r"], entry, w, parked, out)
        state.set(key, entry)

    def _retry(
        self,
        worker_id: str,
        te_id: str,
        state: StateStore,
        w: Record,
        parked: dict[str, str],
        out: list[Record],
    ) -> None:
        key = "te:" + te_id
        entry = state.get(key)
        if entry is None:
            parked.pop(te_id, None)
            return
        posted = entry["posted"]
        self._evaluate(worker_id, te_id, entry, w, parked, out)
        if entry["posted"] is not posted:
            state.set(key, entry)

    def _evaluate(
        self,
        worker_id: str,
        te_id: str,
        entry: Record,
        w: Record,
        parked: dict[str, str],
        out: list[Record],
    ) -> None:
        rec = entry["a"]
        approved = rec is not None and rec["s"] == "APPROVED"
        posted = entry["posted"]
        parked.pop(te_id, None)
        if posted is not None and approved and posted["ess"] == _essentials(rec):
            return  # in the ledger as it stands
        if posted is not None:
            payload = dict(posted["payload"]) | {"reverses_command_id": posted["command_id"]}
            out.append(self._command(REVERSE, te_id, payload, posted["command_id"], entry))
            entry["posted"] = None
        if not approved:
            return
        payload, reason = self._postable(worker_id, te_id, entry, w)
        if payload is None:
            parked[te_id] = reason
            return
        entry["n"] += 1
        payload["version"] = entry["n"]
        command = self._command(POST, te_id, payload, f"{entry['lsn']}:{entry['ts']}", entry)
        out.append(command)
        entry["posted"] = {
            "command_id": command["command_id"],
            "payload": payload,
            "ess": _essentials(rec),
        }

    def _postable(
        self, worker_id: str, te_id: str, entry: Record, w: Record
    ) -> tuple[Record | None, str]:
        rec = entry["a"]
        day = rec["d"]
        hr = w["hr"]["a"] if w["hr"] else None
        if hr is None:
            return None, "worker"
        if day < hr["hire"] or (hr["term"] is not None and day > hr["term"]):
            return None, "inactive"
        linked = sorted((not v["a"]["act"], erp_id) for erp_id, v in w["emp"].items() if v["a"])
        if not linked:
            return None, "erp_employee"
        project = self.ref.active_project(rec["p"], entry["ts"])
        if project is None:
            return None, "reference"
        since, erp_project_id, erp_project = project
        period_id = f"{erp_project['le']}:{day[:7]}"
        is_open = self.ref.period_open(period_id, since)
        if is_open is None:
            return None, "reference"
        if not is_open:
            return None, "closed"
        found = rate_on(w["rates"], day)
        if found is None:
            return None, "rate"
        rate = found[1]
        return {
            "time_entry_id": te_id,
            "version": 0,
            "worker_id": worker_id,
            "project_id": rec["p"],
            "erp_employee_id": linked[0][1],
            "erp_project_id": erp_project_id,
            "work_date": day,
            "hours": _money(rec["h"]),
            "billable": rec["b"],
            "cost_rate": _money(rate["rate"]),
            "currency": rate["cur"],
            "cost_amount": _money(Decimal(rec["h"]) * Decimal(rate["rate"])),
            "period_id": period_id,
            "reverses_command_id": None,
        }, ""

    def _command(self, kind: str, te_id: str, payload: Record, basis: str, entry: Record) -> Record:
        self.stats.outputs[kind] += 1
        return {
            "kind": "command",
            "command_id": _command_id(kind, te_id, basis),
            "type": kind,
            "entity_id": te_id,
            "payload": payload,
            "causation": [{"topic": TE, "key": te_id, "lsn": entry["lsn"], "ts_ms": entry["ts"]}],
            "issued_at": _now(),
        }
