"""Worker rules: HR (owner of identity, status, cost center, legal entity) vs the ERP.

Pure functions. `apply_change` folds a source change into a worker's state
(dropping redelivered and out-of-date versions); `evaluate` says what should
hold given the whole state: findings (alerts, exceptions) and command drafts.
The lifecycle (OPEN/RESOLVED, issue-once) lives in `streams.findings`.

Rules (shared/domain.md):
- WORKER_MISSING_IN_ERP: HR ACTIVE/LEAVE, no ERP employee linked -> alert (INFO)
  and UPSERT_EMPLOYEE when the cost center is valid, else exception
  WORKER_INVALID_COST_CENTER. A cost center not yet seen parks the worker;
  after the dependency timeout, exception DEPENDENCY_TIMEOUT.
- WORKER_FIELD_DRIFT: ERP cost_center/legal_entity differ from HR -> alert
  (WARNING) and UPSERT_EMPLOYEE correcting the ERP.
- TERMINATED_WORKER_ACTIVE_IN_ERP: HR TERMINATED, ERP active -> alert
  (CRITICAL) and DEACTIVATE_EMPLOYEE.
- ERP_EMPLOYEE_WITHOUT_HR_WORKER: active ERP employee whose worker_id HR does
  not know, once the orphan grace has passed -> alert (WARNING).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pssync.streams.changes import Change, SourceRef
from pssync.streams.findings import CommandDraft, FieldDiff, Finding
from pssync.streams.rules.common import Evaluation, Parking, Timing, is_newer, remember

Record = dict[str, Any]

EMPLOYEE_TOPIC = "erp.cmd.employee"
HR_TOPIC = "cdc.hr.worker"
ERP_TOPIC = "cdc.erp.employee"
COST_CENTER_TOPIC = "cdc.erp.cost_center"
RATE_TOPIC = "cdc.erp.cost_rate"

STAFFED_STATUSES = frozenset({"ACTIVE", "LEAVE"})


def new_state(key: str) -> Record:
    """State of one join key: an HR worker id, or `erp:<id>` for an unlinked ERP employee."""
    return {
        "key": key,
        "hr": None,
        "hr_src": None,
        "erp": {},
        "seen": {},
        "open": {},
        "issued": [],
        "since": {},
        "golden": None,
    }


def apply_change(state: Record, change: Change) -> bool:
    """Fold `change` into `state`; False if it was a duplicate or out of date."""
    if not is_newer(state["seen"], change.source):
        return False
    remember(state["seen"], change.source)
    if change.topic == HR_TOPIC:
        state["hr"] = change.after
        state["hr_src"] = change.source.to_json()
    elif change.topic == RATE_TOPIC:
        rates = state.setdefault("rates", {})
        if change.after is None or change.after.get("worker_id") != state["key"]:
            rates.pop(change.entity_id, None)  # deleted, or moved to another worker
        else:
            rates[change.entity_id] = change.after
    elif change.topic == ERP_TOPIC:
        erp_id = change.entity_id
        after = change.after
        linked_here = after is not None and join_key_of_erp(after) == state["key"]
        if linked_here:
            state["erp"][erp_id] = {"rec": after, "src": change.source.to_json()}
        else:
            # deleted, or relinked to another worker: no longer part of this key
            state["erp"].pop(erp_id, None)
    return True


def join_key_of_erp(erp: Record) -> str:
    """The key an ERP employee joins on: its HR worker_id, or `erp:<id>` if unlinked."""
    worker_id = erp.get("worker_id")
    return str(worker_id) if worker_id else f"erp:{erp['erp_employee_id']}"


def cost_center_check(hr: Record, cost_centers: Mapping[str, Record]) -> tuple[str, str | None]:
    """('ok'|'invalid'|'unknown', reason) for the HR worker's cost center in the ERP."""
    cc_id = hr.get("cost_center")
    if not cc_id:
        return "invalid", "the worker has no cost center in HR"
    cc = cost_centers.get(cc_id)
    if cc is None:
        return "unknown", f"cost center {cc_id} is not known to the ERP yet"
    if not cc.get("is_active"):
        return "invalid", f"cost center {cc_id} is inactive in the ERP"
    if cc.get("legal_entity") != hr.get("legal_entity"):
        return "invalid", (
            f"cost center {cc_id} belongs to legal entity {cc.get('legal_entity')}, "
            f"the worker to {hr.get('legal_entity')}"
        )
    return "ok", None


def _payload(hr: Record, erp_id: str | None, active: bool) -> Record:
    return {
        "worker_id": hr["worker_id"],
        "erp_employee_id": erp_id,
        "is_active": active,
        "cost_center": hr.get("cost_center"),
        "legal_entity": hr["legal_entity"],
        "full_name": hr.get("full_name"),
        "email": hr.get("email"),
        "employment_status": hr.get("employment_status"),
        "hire_date": hr.get("hire_date"),
        "termination_date": hr.get("termination_date"),
        "manager_id": hr.get("manager_id"),
        "job_profile": hr.get("job_profile"),
    }


def _identity(src: Record | None) -> str:
    return SourceRef.from_json(src).identity if src else "none"


def evaluate(state: Record, cost_centers: Mapping[str, Record], timing: Timing) -> Evaluation:
    """What should hold for this worker now. Updates `state["since"]` timers."""
    out = Evaluation()
    parking = Parking(state, out, timing)
    hr: Record | None = state["hr"]
    erps: dict[str, Record] = state["erp"]

    def gate(hr: Record, why: str) -> bool:
        """True if commands may be built from HR's cost center; else records why not."""
        verdict, reason = cost_center_check(hr, cost_centers)
        if verdict == "ok":
            return True
        if verdict == "unknown":
            dep = f"cost_center:{hr['cost_center']}"
            if parking.wait(dep, why):
                out.findings.append(_dependency_timeout(hr, dep, why, parking.started(dep)))
            return False
        out.findings.append(
            Finding(
                kind="exception",
                rule="WORKER_INVALID_COST_CENTER",
                entity_type="worker",
                entity_id=hr["worker_id"],
                reason=reason or "invalid cost center",
                context=(
                    ("cost_center", hr.get("cost_center")),
                    ("legal_entity", hr.get("legal_entity")),
                    ("needed_for", why),
                ),
                remediation=(
                    "Fix the worker's cost center in HR, or create/activate the cost "
                    "center in the ERP for the worker's legal entity; the employee is "
                    "then synced automatically."
                ),
            )
        )
        return False

    if hr is not None:
        worker_id = hr["worker_id"]
        status = hr.get("employment_status")
        if status in STAFFED_STATUSES and not erps:
            out.findings.append(
                Finding(
                    kind="alert",
                    rule="WORKER_MISSING_IN_ERP",
                    severity="INFO",
                    entity_type="worker",
                    entity_id=worker_id,
                    fields=(FieldDiff("erp_employee_id", "ERP", {"HR": worker_id, "ERP": None}),),
                    remediation=(
                        "pssync has sent UPSERT_EMPLOYEE; if this stays open, check the "
                        "ERP sink and any WORKER_INVALID_COST_CENTER exception."
                    ),
                )
            )
            if gate(hr, "UPSERT_EMPLOYEE (new worker)"):
                out.commands.append(
                    CommandDraft(
                        topic=EMPLOYEE_TOPIC,
                        type="UPSERT_EMPLOYEE",
                        entity_id=worker_id,
                        key=worker_id,
                        payload=_payload(hr, None, True),
                        basis=(_identity(state["hr_src"]),),
                        rule="WORKER_MISSING_IN_ERP",
                        sources=(state["hr_src"],),
                    )
                )
        for erp_id, entry in sorted(erps.items()):
            erp = entry["rec"]
            basis = (_identity(state["hr_src"]), _identity(entry["src"]))
            sources = (state["hr_src"], entry["src"])
            if status == "TERMINATED":
                if erp.get("is_active"):
                    out.findings.append(
                        Finding(
                            kind="alert",
                            rule="TERMINATED_WORKER_ACTIVE_IN_ERP",
                            severity="CRITICAL",
                            entity_type="worker",
                            entity_id=worker_id,
                            fields=(
                                FieldDiff(
                                    "employment_status",
                                    "HR",
                                    {"HR": "TERMINATED", "ERP": "ACTIVE"},
                                ),
                            ),
                            remediation=(
                                "pssync has sent DEACTIVATE_EMPLOYEE; block new time and "
                                "expenses for this employee until the ERP shows it inactive."
                            ),
                        )
                    )
                    out.commands.append(
                        CommandDraft(
                            topic=EMPLOYEE_TOPIC,
                            type="DEACTIVATE_EMPLOYEE",
                            entity_id=erp_id,
                            key=erp_id,
                            payload=_payload(hr, erp_id, False),
                            basis=basis,
                            rule="TERMINATED_WORKER_ACTIVE_IN_ERP",
                            sources=sources,
                        )
                    )
                continue
            diffs = tuple(
                FieldDiff(name, "HR", {"HR": hr.get(name), "ERP": erp.get(name)})
                for name in ("cost_center", "legal_entity")
                if hr.get(name) != erp.get(name)
            )
            if diffs:
                out.findings.append(
                    Finding(
                        kind="alert",
                        rule="WORKER_FIELD_DRIFT",
                        severity="WARNING",
                        entity_type="worker",
                        entity_id=worker_id,
                        fields=diffs,
                        remediation=(
                            "HR owns cost center and legal entity: pssync has sent "
                            "UPSERT_EMPLOYEE to correct the ERP; do not edit the ERP by hand."
                        ),
                    )
                )
                if gate(hr, "UPSERT_EMPLOYEE (field drift)"):
                    out.commands.append(
                        CommandDraft(
                            topic=EMPLOYEE_TOPIC,
                            type="UPSERT_EMPLOYEE",
                            entity_id=erp_id,
                            key=erp_id,
                            payload=_payload(hr, erp_id, bool(erp.get("is_active"))),
                            basis=basis,
                            rule="WORKER_FIELD_DRIFT",
                            sources=sources,
                        )
                    )

    for erp_id, entry in sorted(erps.items()):
        erp = entry["rec"]
        timer = f"orphan:{erp_id}"
        if hr is None and erp.get("is_active") and parking.timer(timer, timing.orphan_grace_ms):
            out.findings.append(
                Finding(
                    kind="alert",
                    rule="ERP_EMPLOYEE_WITHOUT_HR_WORKER",
                    severity="WARNING",
                    entity_type="erp_employee",
                    entity_id=erp_id,
                    fields=(
                        FieldDiff("worker_id", "HR", {"HR": None, "ERP": erp.get("worker_id")}),
                    ),
                    remediation=(
                        "The ERP has an active employee HR does not know: link it to "
                        "the right HR worker_id, or deactivate it in the ERP."
                    ),
                )
            )

    parking.done()
    return out


def _dependency_timeout(hr: Record, dep: str, why: str, started: int) -> Finding:
    kind, _, ident = dep.partition(":")
    return Finding(
        kind="exception",
        rule="DEPENDENCY_TIMEOUT",
        entity_type="worker",
        entity_id=hr["worker_id"],
        reason=f"waited too long for {kind} {ident} from the ERP",
        context=(("missing", dep), ("needed_for", why), ("waiting_since_ms", str(started))),
        remediation=(
            f"Create {kind} {ident} in the ERP (or correct the worker's {kind} in HR); "
            "this resolves itself once it arrives."
        ),
    )


def golden(state: Record, open_rules: list[str]) -> tuple[str, Record] | None:
    """The reconciled worker record (JSON form), keyed by worker_id, or None."""
    hr: Record | None = state["hr"]
    erps: dict[str, Record] = state["erp"]
    if hr is None and not erps:
        return None
    erp = next(iter(v["rec"] for _, v in sorted(erps.items())), None)
    worker_id = hr["worker_id"] if hr else (erp or {}).get("worker_id")
    if not worker_id:
        return None
    hr = hr or {}
    erp = erp or {}
    alerts = sorted({r.split("|")[1] for r in open_rules if r.startswith("alert|")})
    exceptions = sorted({r.split("|")[1] for r in open_rules if r.startswith("exception|")})
    record = {
        "worker_id": worker_id,
        "full_name": hr.get("full_name"),
        "email": hr.get("email"),
        "employment_status": hr.get("employment_status"),
        "hire_date": hr.get("hire_date"),
        "termination_date": hr.get("termination_date"),
        "cost_center": hr.get("cost_center"),
        "legal_entity": hr.get("legal_entity"),
        "manager_id": hr.get("manager_id"),
        "job_profile": hr.get("job_profile"),
        "erp_employee_id": erp.get("erp_employee_id"),
        "erp_is_active": erp.get("is_active"),
        "erp_cost_center": erp.get("cost_center"),
        "erp_legal_entity": erp.get("legal_entity"),
        "in_sync": not alerts and not exceptions,
        "open_alerts": alerts,
        "open_exceptions": exceptions,
    }
    return worker_id, record
