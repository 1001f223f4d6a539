"""`pssync simulate`, without Kafka: determinism, contract form, a clean baseline, faults.

The checks replay the emitted lines into plain per-topic tables, as a consumer
would see them in arrival order, and test the contract's invariants on that
state alone, not on the simulator's own model.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from pssync.cli.main import main
from pssync.connectors.jsonl import Forms, parse_line
from pssync.simulate import (
    KINDS,
    Firm,
    Group,
    Line,
    Raw,
    SimConfig,
    limit_count,
    parse_fault_rates,
    run,
)

Record = dict[str, Any]


@dataclass
class Result:
    groups: list[Group]
    firm: Firm

    @property
    def items(self) -> list[Line | Raw]:
        return [item for g in self.groups for item in g.items]

    @property
    def lines(self) -> list[Line]:
        return [i for i in self.items if isinstance(i, Line)]

    def truth(self, kind: str | None = None) -> list[Record]:
        records = [r for g in self.groups for f in g.faults for r in f.records()]
        return [r for r in records if kind is None or r["fault"] == kind]


def generate(days: int = 40, seed: int = 7, rate: float = 0.0, **kinds: float) -> Result:
    rates = parse_fault_rates([f"{k}={p}" for k, p in kinds.items()], rate)
    firm = Firm(SimConfig(seed=seed, fault_rates=rates))
    return Result(list(run(firm, days)), firm)


@dataclass
class State:
    """The sources as a consumer has seen them so far: topic -> key -> after-image."""

    tables: dict[str, dict[str, Record]] = field(default_factory=dict)

    def rows(self, topic: str) -> dict[str, Record]:
        return self.tables.setdefault(topic, {})

    def employees_of(self, worker_id: str) -> list[Record]:
        rows = self.rows("cdc.erp.employee").values()
        return [e for e in rows if e["worker_id"] == worker_id]

    def erp_projects_of(self, project_id: str) -> list[Record]:
        return [p for p in self.rows("cdc.erp.project").values() if p["project_id"] == project_id]

    def rate_on(self, worker_id: str, day: str) -> list[Record]:
        return [
            r
            for r in self.rows("cdc.erp.cost_rate").values()
            if r["worker_id"] == worker_id
            and r["effective_from"] <= day
            and (r["effective_to"] is None or day <= r["effective_to"])
        ]

    def cost_center_active(self, cc: str | None) -> bool:
        row = self.rows("cdc.erp.cost_center").get(cc or "")
        return bool(row and row["is_active"])


def replay(lines: list[Line]) -> Iterator[tuple[str, Record, State]]:
    """(topic, after-image, state after applying it) per first delivery of each change."""
    state, seen = State(), set()
    for line in lines:
        if line.text in seen:
            continue
        seen.add(line.text)
        value = json.loads(line.text)["value"]
        state.rows(line.topic)[line.key] = value["after"]
        yield line.topic, value["after"], state


def employed(worker: Record, day: str) -> bool:
    ended = worker["termination_date"] is not None and day > worker["termination_date"]
    return worker["hire_date"] <= day and not ended


# -- determinism and form ------------------------------------------------------
def test_same_seed_gives_the_same_lines_and_truth() -> None:
    a, b = generate(days=20, rate=0.2), generate(days=20, rate=0.2)
    assert [i.text if isinstance(i, Line) else i.to_json() for i in a.items] == [
        i.text if isinstance(i, Line) else i.to_json() for i in b.items
    ]
    assert a.truth() == b.truth()
    assert len(a.lines) > 500


def test_a_different_seed_gives_a_different_firm() -> None:
    a, b = generate(days=5, seed=1), generate(days=5, seed=2)
    assert [line.text for line in a.lines] != [line.text for line in b.lines]


@pytest.mark.parametrize("rate", [0.0, 0.3])
def test_every_line_is_valid_contract_json_form(rate: float) -> None:
    forms = Forms()
    result = generate(days=30, rate=rate)
    for n, line in enumerate(result.lines, start=1):
        topic, _key, value, headers = parse_line(forms, n, line.text)
        assert topic == line.topic
        assert value is not None
        assert headers == [("correlation_id", headers[0][1])]
    assert result.firm.stats == Counter()  # the oracle never had to withhold an entry


@pytest.mark.parametrize("rate", [0.0, 0.3])
def test_source_lsn_and_commit_time_increase_per_database(rate: float) -> None:
    last_lsn: dict[str, int] = {}
    last_ts: dict[str, int] = {}
    seen = set()
    for line in generate(days=30, rate=rate).lines:
        if line.text in seen:  # a redelivery repeats its position, by design
            continue
        seen.add(line.text)
        assert line.lsn > last_lsn.get(line.db, 0), line.text
        assert line.ts_ms > last_ts.get(line.db, 0), line.text
        last_lsn[line.db], last_ts[line.db] = line.lsn, line.ts_ms
    assert set(last_lsn) == {"hr", "erp", "crm", "psa"}


def test_count_stops_after_the_group_holding_the_nth_change() -> None:
    firm = Firm(SimConfig())
    groups = list(limit_count(run(firm, None), 2_000))
    sent = sum(len(g.items) for g in groups)
    assert sent >= 2_000
    assert sent - len(groups[-1].items) < 2_000


# -- the clean baseline ----------------------------------------------------------
def test_clean_baseline_never_gives_a_rule_a_reason_to_fire() -> None:
    """Checked after every change in arrival order, as the worker evaluates."""
    result = generate(days=45)
    assert result.truth() == []
    approved = 0
    for topic, row, state in replay(result.lines):
        if topic == "cdc.hr.worker":
            _check_worker(state, row)
        elif topic == "cdc.erp.employee":
            worker = state.rows("cdc.hr.worker").get(row["worker_id"])
            if worker is not None:
                _check_worker(state, worker)
        elif topic == "cdc.psa.project" and row["status"] == "ACTIVE":
            _check_project(state, row)
        elif topic == "cdc.erp.project":
            psa = state.rows("cdc.psa.project").get(row["project_id"])
            assert psa is None or {psa["status"], row["status"]} != {"ACTIVE", "CLOSED"}
        elif topic == "cdc.crm.sow" and row["status"] == "SIGNED":
            projects = state.rows("cdc.psa.project").values()
            assert any(p["sow_id"] == row["sow_id"] for p in projects), row
        elif topic == "cdc.psa.assignment" and row["status"] == "CONFIRMED":
            _check_assignment(state, row)
        elif topic == "cdc.psa.time_entry" and row["status"] == "APPROVED":
            _check_time_entry(state, row)
            approved += 1
    final = state
    hr = final.rows("cdc.hr.worker")
    for employee in final.rows("cdc.erp.employee").values():
        worker = hr[employee["worker_id"]]  # every ERP employee links a known HR worker
        assert (employee["cost_center"], employee["legal_entity"]) == (
            worker["cost_center"],
            worker["legal_entity"],
        )
    for project in final.rows("cdc.psa.project").values():
        sow = final.rows("cdc.crm.sow")[project["sow_id"]]
        assert (sow["legal_entity"], sow["currency"]) == (
            project["legal_entity"],
            project["currency"],
        )
    referenced = {p["sow_id"] for p in final.rows("cdc.psa.project").values()}
    signed = {s["sow_id"] for s in final.rows("cdc.crm.sow").values() if s["status"] == "SIGNED"}
    assert signed <= referenced
    posts = sum(g.posts for g in result.groups)
    assert approved == posts > 300
    assert "CLOSED" in {p["status"] for p in final.rows("cdc.erp.period").values()}
    assert any(r["effective_to"] for r in final.rows("cdc.erp.cost_rate").values())


def _check_worker(state: State, worker: Record) -> None:
    employees = state.employees_of(worker["worker_id"])
    if worker["employment_status"] in ("ACTIVE", "LEAVE"):
        assert employees, f"{worker['worker_id']} reached HR before its ERP employee"
        assert state.cost_center_active(worker["cost_center"])
    for employee in employees:
        assert employee["cost_center"] == worker["cost_center"]
        assert employee["legal_entity"] == worker["legal_entity"]
        if worker["employment_status"] == "TERMINATED":
            assert not employee["is_active"]


def _check_project(state: State, project: Record) -> None:
    erp = state.erp_projects_of(project["project_id"])
    assert [p["status"] for p in erp] == ["ACTIVE"], project
    customers = [
        c
        for c in state.rows("cdc.erp.customer").values()
        if c["crm_account_id"] == project["crm_account_id"]
    ]
    assert customers
    assert all(c["status"] == "APPROVED" and c["tax_profile"] for c in customers)
    sow = state.rows("cdc.crm.sow").get(project["sow_id"])  # may follow (checked at the end)
    for other in [*customers, *erp, *([sow] if sow else [])]:
        assert (other["legal_entity"], other["currency"]) == (
            project["legal_entity"],
            project["currency"],
        )


def _check_assignment(state: State, assignment: Record) -> None:
    worker = state.rows("cdc.hr.worker")[assignment["worker_id"]]
    ended = worker["termination_date"]
    assert ended is None or ended > assignment["end_date"]
    assert state.cost_center_active(worker["cost_center"])
    (rate,) = state.rate_on(worker["worker_id"], assignment["start_date"])
    assert Decimal(assignment["bill_rate"]) > Decimal(rate["rate"])
    project = state.rows("cdc.psa.project")[assignment["project_id"]]
    assert project["start_date"] <= assignment["start_date"] <= assignment["end_date"]
    assert assignment["end_date"] <= project["end_date"]


def _check_time_entry(state: State, entry: Record) -> None:
    """The contract's conditions for POST_TIME_ENTRY, all met when the approval arrives."""
    day = entry["work_date"]
    worker = state.rows("cdc.hr.worker")[entry["worker_id"]]
    assert employed(worker, day)
    assert state.employees_of(worker["worker_id"])
    (erp,) = state.erp_projects_of(entry["project_id"])
    assert erp["status"] == "ACTIVE"
    period = state.rows("cdc.erp.period")[f"{erp['legal_entity']}:{day[:7]}"]
    assert period["status"] == "OPEN"
    assert len(state.rate_on(worker["worker_id"], day)) == 1
    assert worker["legal_entity"] == erp["legal_entity"]


# -- faults ----------------------------------------------------------------------
def test_duplicate_resends_an_identical_line() -> None:
    result = generate(days=3, DUPLICATE=1.0)
    texts = Counter(line.text for line in result.lines)
    records = result.truth("DUPLICATE")
    assert records
    assert all(r["expect_rule"] is None and r["kind"] is None for r in records)
    by_lsn = {
        (json.loads(t)["value"]["source"]["lsn"], json.loads(t)["topic"]): n
        for t, n in texts.items()
    }
    for record in records:
        assert by_lsn[(record["detail"]["lsn"], record["detail"]["topic"])] == 2
    assert len(records) == sum(n - 1 for n in texts.values())


def test_undecodable_is_garbage_with_a_valid_key() -> None:
    result = generate(days=3, UNDECODABLE=1.0)
    raws = [i for i in result.items if isinstance(i, Raw)]
    records = result.truth("UNDECODABLE")
    assert raws
    assert len(raws) == len(records)
    assert all(r["kind"] == "dlq" and r["expect_rule"] is None for r in records)
    forms = Forms()
    for raw in raws:
        assert raw.value[0] != 0  # not even the wire format's magic byte
        forms.get(raw.topic, "key").from_json(raw.key)


def _final(result: Result) -> State:
    last = State()
    for _, _, state in replay(result.lines):
        last = state
    return last


@pytest.mark.parametrize(
    "kind",
    [k for k in KINDS if k not in ("DUPLICATE", "UNDECODABLE")],
)
def test_a_forced_fault_is_recorded_and_its_defect_is_in_the_lines(kind: str) -> None:
    result = generate(days=40, **{kind: 1.0})
    records = [r for r in result.truth() if not r["detail"].get("companion")]
    assert len(records) >= 3, f"only {len(records)} {kind} injected"
    assert {r["fault"] for r in result.truth()} == {kind}
    assert len({(r["entity_type"], r["entity_id"]) for r in records}) == len(records)
    state = _final(result)
    for record in records:
        _assert_defect(result, state, record)
    if kind.startswith("TIME_"):  # the project of an unposted faulty entry is left alone
        for record in records:
            entry = state.rows("cdc.psa.time_entry")[record["entity_id"]]
            (erp,) = state.erp_projects_of(entry["project_id"])
            at = dt.datetime.fromisoformat(record["at"].replace("Z", "+00:00"))
            later = [
                line
                for line in result.lines
                if line.topic == "cdc.erp.project"
                and line.key == erp["erp_project_id"]
                and line.ts_ms > at.timestamp() * 1000
            ]
            assert later == [], record


def _assert_defect(result: Result, state: State, record: Record) -> None:
    kind, entity, detail = record["fault"], record["entity_id"], record["detail"]
    hr, erp_employees = state.rows("cdc.hr.worker"), state.rows("cdc.erp.employee")
    psa_projects, assignments = state.rows("cdc.psa.project"), state.rows("cdc.psa.assignment")
    entries, customers = state.rows("cdc.psa.time_entry"), state.rows("cdc.erp.customer")
    if kind == "WORKER_MISSING_IN_ERP":
        assert hr[entity]["employment_status"] == "ACTIVE"
        assert not state.employees_of(entity)
    elif kind == "WORKER_INVALID_COST_CENTER":
        assert not state.cost_center_active(hr[entity]["cost_center"])
        assert not state.employees_of(entity)
        assert [
            r["expect_rule"] for r in result.truth() if r["fault_id"] == record["fault_id"]
        ] == [
            "WORKER_INVALID_COST_CENTER",
            "WORKER_MISSING_IN_ERP",
        ]
    elif kind == "WORKER_FIELD_DRIFT":
        (employee,) = state.employees_of(entity)
        assert employee["cost_center"] != hr[entity]["cost_center"] == detail["hr"]
    elif kind == "TERMINATED_WORKER_ACTIVE_IN_ERP":
        assert hr[entity]["employment_status"] == "TERMINATED"
        assert [e["is_active"] for e in state.employees_of(entity)] == [True]
    elif kind == "ERP_EMPLOYEE_WITHOUT_HR_WORKER":
        employee = erp_employees[entity]
        assert employee["is_active"]
        assert employee["worker_id"] not in hr
    elif kind in ("PROJECT_MISSING_IN_ERP", "PROJECT_GATE_FAILED"):
        project = psa_projects[entity]
        assert project["status"] == "ACTIVE"
        assert not state.erp_projects_of(entity)
        (customer,) = [
            c for c in customers.values() if c["crm_account_id"] == project["crm_account_id"]
        ]
        failed = {
            "customer_not_approved": customer["status"] != "APPROVED",
            "customer_without_tax_profile": customer["tax_profile"] is None,
            "currency_mismatch": customer["currency"] != project["currency"],
        }
        expected = detail.get("failed_checks", [])
        assert sorted(k for k, v in failed.items() if v) == sorted(expected)
        if kind == "PROJECT_GATE_FAILED":
            assert record["also_allowed"] == ["PROJECT_MISSING_IN_ERP"]
            assert expected
    elif kind == "PROJECT_FIELD_DRIFT":
        assert psa_projects[entity]["status"] == "ACTIVE"
        assert [p["status"] for p in state.erp_projects_of(entity)] == ["CLOSED"]
    elif kind == "SOW_SIGNED_WITHOUT_PROJECT":
        assert state.rows("cdc.crm.sow")[entity]["status"] == "SIGNED"
        assert entity not in {p["sow_id"] for p in psa_projects.values()}
    elif kind == "ASSIGNMENT_WORKER_INELIGIBLE":
        assignment = assignments[entity]
        worker = hr[assignment["worker_id"]]
        assert assignment["status"] == "CONFIRMED"
        assert worker["employment_status"] == "TERMINATED"
        assert worker["termination_date"] < assignment["end_date"]
    elif kind == "ASSIGNMENT_INVALID_COST_CENTER":
        assignment = assignments[entity]
        worker = hr[assignment["worker_id"]]
        assert assignment["status"] == "CONFIRMED"
        assert not state.cost_center_active(worker["cost_center"])
        assert [e["cost_center"] for e in state.employees_of(worker["worker_id"])] == [
            worker["cost_center"]
        ]
    elif kind == "ASSIGNMENT_RATE_BELOW_COST":
        assignment = assignments[entity]
        (rate,) = state.rate_on(assignment["worker_id"], assignment["start_date"])
        assert Decimal(assignment["bill_rate"]) < Decimal(rate["rate"])
    elif kind == "TIME_FOR_INACTIVE_WORKER":
        entry = entries[entity]
        worker = hr[entry["worker_id"]]
        assert entry["status"] == "APPROVED"
        assert entry["work_date"] > worker["termination_date"]
    elif kind == "TIME_IN_CLOSED_PERIOD":
        _assert_closed_when_approved(result, entity)
    elif kind == "TIME_MISSING_COST_RATE":
        assert record["also_allowed"] == ["TIME_IN_CLOSED_PERIOD"]
        entry = entries[entity]
        assert entry["status"] == "APPROVED"
        assert state.rate_on(entry["worker_id"], entry["work_date"]) == []
        assert state.rate_on(entry["worker_id"], _day(entry["work_date"], -1))
        assert state.rate_on(entry["worker_id"], _day(entry["work_date"], +1))
    elif kind == "DEPENDENCY_TIMEOUT":
        entry = entries[entity]
        assert entry["status"] == "APPROVED"
        assert entry["project_id"] not in psa_projects
        assert not state.erp_projects_of(entry["project_id"])
        assert detail["missing"] == f"project:{entry['project_id']}"
    elif kind == "OUT_OF_ORDER":
        order = [(line.topic, line.key) for line in result.lines]
        worker_at = order.index(("cdc.hr.worker", entity))
        sent_first = detail["sent_first"]
        assert sent_first
        assert all(order.index(("cdc.psa.time_entry", t)) < worker_at for t in sent_first[1:])
        assert order.index(("cdc.psa.assignment", sent_first[0])) < worker_at
        assert record["expect_rule"] is None
    else:  # pragma: no cover - every kind above
        raise AssertionError(kind)


def _day(iso_day: str, delta: int) -> str:
    return (dt.date.fromisoformat(iso_day) + dt.timedelta(days=delta)).isoformat()


def _assert_closed_when_approved(result: Result, entry_id: str) -> None:
    for topic, row, state in replay(result.lines):
        if topic != "cdc.psa.time_entry" or row["time_entry_id"] != entry_id:
            continue
        if row["status"] == "APPROVED":
            (erp,) = state.erp_projects_of(row["project_id"])
            period = state.rows("cdc.erp.period")[f"{erp['legal_entity']}:{row['work_date'][:7]}"]
            assert period["status"] == "CLOSED"
            return
    raise AssertionError(f"{entry_id} never approved")


# -- the command line --------------------------------------------------------------
def test_cli_writes_identical_files_and_a_truth_summary(tmp_path: Path) -> None:
    outputs = []
    for name in ("a", "b"):
        out, truth = tmp_path / f"{name}.jsonl", tmp_path / f"{name}.truth.jsonl"
        args = ["simulate", "--days", "8", "--rate", "0", "--output", str(out)]
        code = main([*args, "--truth", str(truth), "--fault-rate", "0.2", "--progress", "0"])
        assert code == 0
        outputs.append((out.read_bytes(), truth.read_bytes()))
    assert outputs[0] == outputs[1]
    lines = outputs[0][1].decode().splitlines()
    summary = json.loads(lines[0])["summary"]
    assert summary["seed"] == 7
    assert summary["expected"]["POST_TIME_ENTRY"] > 0
    faults = [json.loads(line) for line in lines[1:]]
    assert faults
    assert Counter(f["fault"] for f in faults if not f["detail"].get("companion")) == (
        Counter(summary["faults"])
    )
    assert set(faults[0]) >= {"fault", "expect_rule", "kind", "entity_type", "entity_id", "at"}
    if summary["expected"]["dlq"]:
        assert (tmp_path / "a.undecodable.jsonl").exists()


def test_cli_rejects_bad_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = str(tmp_path / "x.jsonl")
    assert main(["simulate", "--output", out]) == 1
    assert "--output needs an end" in capsys.readouterr().err
    assert main(["simulate", "--days", "1", "--output", out, "--fault", "NOPE=1"]) == 1
    assert "NOPE=1" in capsys.readouterr().err
    assert main(["simulate", "--days", "1", "--output", out, "--fault", "DUPLICATE=2"]) == 1
    with pytest.raises(SystemExit):
        main(["simulate", "--help"])
    assert "ASSIGNMENT_RATE_BELOW_COST" in capsys.readouterr().out
