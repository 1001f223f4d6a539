"""Faust agents: one module per consumed flow, each exposing `register(app, rt)`.

`MODULES` is the explicit list the app factory registers, in order (Faust's
`autodiscover` is off). Ingest modules also expose `SPEC`.
"""

INGEST_MODULES = (
    "pssync.streams.agents.hr_worker",
    "pssync.streams.agents.erp_employee",
    "pssync.streams.agents.erp_cost_center",
    "pssync.streams.agents.erp_cost_rate",
    "pssync.streams.agents.erp_period",
    "pssync.streams.agents.erp_customer",
    "pssync.streams.agents.erp_project",
    "pssync.streams.agents.crm_sow",
    "pssync.streams.agents.psa_project",
    "pssync.streams.agents.psa_assignment",
    "pssync.streams.agents.psa_time_entry",
    "pssync.streams.agents.ops_actions",
)
KEYED_MODULES = (
    "pssync.streams.agents.worker_keyed",
    "pssync.streams.agents.project_keyed",
)
MODULES = INGEST_MODULES + KEYED_MODULES
