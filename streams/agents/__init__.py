"""Faust agents: one module per consumed flow, each exposing `register(app, rt)`.

`MODULES` is the explicit list the app factory passes to Faust's
`autodiscover` and registers, in order.
"""

MODULES = (
    "pssync.streams.agents.hr_worker",
    "pssync.streams.agents.erp_employee",
    "pssync.streams.agents.erp_cost_center",
    "pssync.streams.agents.worker_keyed",
)
