"""Opportunity to project: PSA projects vs the ERP, behind a governance gate; SOWs vs PSA.

Pure. Rules (shared/domain.md):
- PROJECT_MISSING_IN_ERP: an ACTIVE PSA project with no ERP project linked by
  project_id: alert (INFO) and CREATE_PROJECT if the governance gate passes:
  an ERP customer exists for the crm_account_id and is APPROVED, has a
  tax_profile, and its legal entity and currency match the project's (and the
  SOW's, where sow_id is set); otherwise exception PROJECT_GATE_FAILED naming
  each failed check. A customer or SOW not seen yet parks the project; after
  the dependency timeout the gate fails on it.
- PROJECT_FIELD_DRIFT: PSA and ERP differ on status (ERP CLOSED vs PSA ACTIVE, or
  the reverse), currency or legal_entity: alert, and UPDATE_PROJECT for the
  status, which the PSA owns (currency and legal entity are the CRM's).
- SOW_SIGNED_WITHOUT_PROJECT: a SIGNED SOW with no PSA project referencing it
  after the project-setup SLA (from signed_at; a SOW without signed_at, from the stream
  time it was first seen signed and unreferenced): alert (WARNING).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from pssync.streams.findings import CommandDraft, FieldDiff, Finding
from pssync.streams.rules.common import Evaluation, Parking, Timing, identity

Record = dict[str, Any]

COMMAND_TOPIC = "erp.cmd.project"
GATE_CHECKS = (
    "customer_exists",
    "customer_approved",
    "customer_has_tax_profile",
    "legal_entity_matches",
    "currency_matches",
)


def new_state(project_id: str) -> Record:
    return {
        "id": project_id,
        "psa": None,
        "psa_src": None,
        "erp": {},
        "seen": {},
        "open": {},
        "issued": [],
        "since": {},
    }


def new_sow_state(sow_id: str) -> Record:
    return {"id": sow_id, "refs": {}, "seen": {}, "open": {}, "issued": [], "since": {}}


@dataclass(slots=True)
class ProjectFacts:
    customers: list[Record] = field(default_factory=list)  # ERP customers of the account
    sow: Record | None = None


def gate(psa: Record, facts: ProjectFacts) -> tuple[list[str], Record | None]:
    """Failed checks (empty = pass) and the customer the project would be created for."""
    best: tuple[list[str], Record | None] = (["customer_exists"], None)
    for customer in sorted(facts.customers, key=lambda c: c["customer_id"]):
        failed = []
        if customer["status"] != "APPROVED":
            failed.append("customer_approved")
        if not customer.get("tax_profile"):
            failed.append("customer_has_tax_profile")
        entities = {psa["legal_entity"], customer["legal_entity"]}
        currencies = {psa["currency"], customer["currency"]}
        if facts.sow is not None:
            entities.add(facts.sow["legal_entity"])
            currencies.add(facts.sow["currency"])
        if len(entities) > 1:
            failed.append("legal_entity_matches")
        if len(currencies) > 1:
            failed.append("currency_matches")
        if best[1] is None or len(failed) < len(best[0]):
            best = (failed, customer)
    return best


def evaluate(state: Record, facts: ProjectFacts, timing: Timing) -> Evaluation:
    out = Evaluation()
    parking = Parking(state, out, timing)
    psa: Record | None = state["psa"]
    erps: dict[str, Record] = state["erp"]
    if psa is None:
        parking.done()
        return out
    pid = psa["project_id"]
    if psa["status"] == "ACTIVE" and not erps:
        out.findings.append(
            Finding(
                kind="alert",
                rule="PROJECT_MISSING_IN_ERP",
                severity="INFO",
                entity_type="project",
                entity_id=pid,
                fields=(FieldDiff("erp_project_id", "ERP", {"PSA": pid, "ERP": None}),),
                remediation="pssync sends CREATE_PROJECT once the governance gate passes; if this "
                "stays open, see the PROJECT_GATE_FAILED exception.",
            )
        )
        _gate_or_create(state, psa, facts, out, parking)
    for erp_id, entry in sorted(erps.items()):
        erp = entry["rec"]
        diffs = []
        if (erp["status"] == "CLOSED" and psa["status"] == "ACTIVE") or (
            psa["status"] == "CLOSED" and erp["status"] == "ACTIVE"
        ):
            diffs.append(FieldDiff("status", "PSA", {"PSA": psa["status"], "ERP": erp["status"]}))
        for name in ("currency", "legal_entity"):
            if psa[name] != erp[name]:
                diffs.append(FieldDiff(name, "CRM", {"PSA": psa[name], "ERP": erp[name]}))
        if not diffs:
            continue
        out.findings.append(
            Finding(
                kind="alert",
                rule="PROJECT_FIELD_DRIFT",
                severity="WARNING",
                entity_type="project",
                entity_id=pid,
                fields=tuple(diffs),
                remediation="The PSA owns delivery status (pssync sent UPDATE_PROJECT); currency "
                "and legal entity follow the CRM contract: correct the system that is wrong.",
            )
        )
        if diffs[0].field == "status":
            payload = _payload(psa, None, erp_id, erp.get("customer_id"))
            payload["status"] = "ACTIVE" if psa["status"] == "ACTIVE" else "CLOSED"
            out.commands.append(
                CommandDraft(
                    topic=COMMAND_TOPIC,
                    type="UPDATE_PROJECT",
                    entity_id=pid,
                    key=pid,
                    payload=payload,
                    basis=(identity(state["psa_src"]), identity(entry["src"])),
                    rule="PROJECT_FIELD_DRIFT",
                    sources=(state["psa_src"], entry["src"]),
                )
            )
    parking.done()
    return out


def _gate_or_create(
    state: Record, psa: Record, facts: ProjectFacts, out: Evaluation, parking: Parking
) -> None:
    pid = psa["project_id"]
    missing = []
    if not facts.customers:
        missing.append(f"customer:{psa['crm_account_id']}")
    if psa.get("sow_id") and facts.sow is None:
        missing.append(f"sow:{psa['sow_id']}")
    timed_out = [m for m in missing if parking.wait(m, f"CREATE_PROJECT {pid}")]
    if missing and not timed_out:
        return
    failed, customer = gate(psa, facts)
    if psa.get("sow_id") and facts.sow is None:
        failed.append("sow_exists")
    if failed:
        out.findings.append(
            Finding(
                kind="exception",
                rule="PROJECT_GATE_FAILED",
                entity_type="project",
                entity_id=pid,
                reason="governance gate failed: " + ", ".join(failed),
                context=(
                    ("failed_checks", ",".join(failed)),
                    ("crm_account_id", psa["crm_account_id"]),
                    ("customer_id", customer["customer_id"] if customer else None),
                    ("sow_id", psa.get("sow_id")),
                    ("missing", ",".join(missing) or None),
                ),
                remediation="Fix the customer master data in the ERP (approval, tax profile, legal "
                "entity, currency) or the project in the PSA; the project is created once the "
                "gate passes.",
            )
        )
        return
    assert customer is not None
    payload = _payload(psa, facts.sow, None, customer["customer_id"])
    out.commands.append(
        CommandDraft(
            topic=COMMAND_TOPIC,
            type="CREATE_PROJECT",
            entity_id=pid,
            key=pid,
            payload=payload,
            basis=(identity(state["psa_src"]),),
            rule="PROJECT_MISSING_IN_ERP",
            sources=(state["psa_src"],),
            sla_start=facts.sow.get("signed_at") if facts.sow else None,
        )
    )


def _payload(
    psa: Record, sow: Record | None, erp_id: str | None, customer_id: str | None
) -> Record:
    return {
        "project_id": psa["project_id"],
        "erp_project_id": erp_id,
        "customer_id": customer_id,
        "crm_account_id": psa["crm_account_id"],
        "sow_id": psa.get("sow_id"),
        "name": psa["name"],
        "legal_entity": psa["legal_entity"],
        "currency": psa["currency"],
        "status": "ACTIVE",
        "billing_type": psa.get("billing_type"),
        "project_template": sow.get("project_template") if sow else None,
        "start_date": psa.get("start_date"),
        "end_date": psa.get("end_date"),
    }


def evaluate_sow(state: Record, sow: Record | None, timing: Timing) -> Evaluation:
    out = Evaluation()
    parking = Parking(state, out, timing)
    if sow is not None and sow["status"] == "SIGNED" and not any(state["refs"].values()):
        signed = sow.get("signed_at")
        sla = timing.project_setup_sla_ms
        if signed:
            signed_ms = int(
                dt.datetime.fromisoformat(signed.replace("Z", "+00:00")).timestamp() * 1000
            )
            late = timing.now_ms >= signed_ms + sla
            if not late:
                out.due(signed_ms + sla)
        else:
            # no signature time: the SLA runs from arrival, i.e. from the first evaluation
            # that saw the SOW signed without a project (kept in state, so it starts once;
            # counting it from each evaluation's `now` re-armed the timer a full SLA on at
            # every fire: it never came due, and walked to any stream time a day at a time)
            late = parking.timer("setup_sla", sla)
        if late:
            out.findings.append(
                Finding(
                    kind="alert",
                    rule="SOW_SIGNED_WITHOUT_PROJECT",
                    severity="WARNING",
                    entity_type="sow",
                    entity_id=sow["sow_id"],
                    fields=(FieldDiff("project", "PSA", {"CRM": sow["sow_id"], "PSA": None}),),
                    remediation="The SOW is signed but no PSA project references it after the "
                    "project-setup SLA: set up the project (or cancel the SOW) in the PSA.",
                )
            )
    parking.done()
    return out


def golden(state: Record) -> Record | None:
    psa = state["psa"]
    erp = next(iter(v["rec"] for _, v in sorted(state["erp"].items())), None)
    if psa is None:
        return None
    alerts = sorted({s.split("|")[1] for s in state["open"] if s.startswith("alert|")})
    exceptions = sorted({s.split("|")[1] for s in state["open"] if s.startswith("exception|")})
    return {
        "project_id": psa["project_id"],
        "name": psa["name"],
        "sow_id": psa.get("sow_id"),
        "crm_account_id": psa["crm_account_id"],
        "customer_id": erp.get("customer_id") if erp else None,
        "legal_entity": psa["legal_entity"],
        "currency": psa["currency"],
        "status": psa["status"],
        "billing_type": psa["billing_type"],
        "start_date": psa["start_date"],
        "end_date": psa.get("end_date"),
        "erp_project_id": erp["erp_project_id"] if erp else None,
        "erp_status": erp["status"] if erp else None,
        "in_sync": not alerts and not exceptions,
        "open_alerts": alerts,
        "open_exceptions": exceptions,
    }
