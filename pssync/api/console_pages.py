"""The console's HTML: pure functions from the service's records to pages (no I/O).

Every value that comes from a record, a query or a form passes through `esc` on its
way into the page; the only markup here is this module's own. The style sheet is one
constant (`CSS`), inlined and allowed by its hash in the Content-Security-Policy
(`STYLE_HASH`), so the pages run no script and load nothing from elsewhere.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import html
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

from pssync.api.queue import AGE_NAMES, STATES, instant_ms

Record = dict[str, Any]

ENTITY_TYPES = ("worker", "project", "assignment", "time_entry")
# the rules that raise exceptions (domain.md "Rules"); the filter also offers any other
# rule the queue holds
EXCEPTION_RULES = (
    "ASSIGNMENT_INVALID_COST_CENTER",
    "ASSIGNMENT_WORKER_INELIGIBLE",
    "DEPENDENCY_TIMEOUT",
    "PROJECT_GATE_FAILED",
    "TIME_FOR_INACTIVE_WORKER",
    "TIME_IN_CLOSED_PERIOD",
    "TIME_MISSING_COST_RATE",
    "WORKER_INVALID_COST_CENTER",
)
AGE_LABELS = {
    "under_1h": "under 1 hour",
    "1h_to_1d": "1 hour to 1 day",
    "1d_to_7d": "1 to 7 days",
    "over_7d": "over 7 days",
}
ANY_STATE = "any"

CSS = """
:root { --ink: #1d2330; --muted: #5d6678; --line: #dde1e8; --bg: #f5f6f8;
  --card: #fff; --accent: #2450a8; --open: #a35a00; --open-bg: #fff3df;
  --ok: #1d6b3a; --ok-bg: #e3f4e8; --gone: #555d6b; --gone-bg: #eceef1;
  --bad: #a4262c; --bad-bg: #fde7e8; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
  color: var(--ink); background: var(--bg); }
header.top { display: flex; align-items: center; gap: 1.5rem; padding: .6rem 1.5rem;
  background: #1d2330; color: #fff; }
header.top a { color: #fff; text-decoration: none; }
header.top .brand { font-weight: 600; letter-spacing: .02em; }
header.top .who { margin-left: auto; color: #c9d1e0; font-size: .9rem; }
header.top form { margin: 0; }
header.top button { background: transparent; color: #fff; border: 1px solid #56607a; }
main { max-width: 1180px; margin: 1.5rem auto; padding: 0 1.5rem; }
h1 { font-size: 1.35rem; margin: 0 0 .25rem; }
h2 { font-size: 1.05rem; margin: 0 0 .6rem; }
.sub { color: var(--muted); margin: 0 0 1rem; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 8px;
  padding: 1rem 1.2rem; margin-bottom: 1rem; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(320px, 1fr)); gap: 1rem; }
.grid .card { margin-bottom: 0; }
main > .grid { margin-bottom: 1rem; }
table { width: 100%; border-collapse: collapse; font-size: .92rem; }
th, td { text-align: left; padding: .4rem .5rem; border-bottom: 1px solid var(--line);
  vertical-align: top; }
th { color: var(--muted); font-weight: 600; font-size: .8rem; text-transform: uppercase;
  letter-spacing: .04em; }
table.kv th { width: 34%; text-transform: none; letter-spacing: 0; font-size: .9rem; }
tbody tr:hover { background: #f9fafc; }
a { color: var(--accent); }
code, .mono { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace;
  font-size: .85rem; word-break: break-all; }
pre { margin: 0; white-space: pre-wrap; word-break: break-all; font-size: .82rem; }
.badge { display: inline-block; padding: .05rem .5rem; border-radius: 999px; font-size: .78rem;
  font-weight: 600; letter-spacing: .03em; }
.OPEN { color: var(--open); background: var(--open-bg); }
.RESOLVED, .APPLIED { color: var(--ok); background: var(--ok-bg); }
.DISMISSED, .NOT_APPLICABLE { color: var(--gone); background: var(--gone-bg); }
.notice { padding: .7rem 1rem; border-radius: 6px; margin-bottom: 1rem;
  background: var(--ok-bg); color: var(--ok); border: 1px solid #b9dfc6; }
.notice.error { background: var(--bad-bg); color: var(--bad); border-color: #f3c1c4; }
.notice.info { background: #e8effc; color: #1f3f80; border-color: #c4d4f3; }
form.filters { display: flex; flex-wrap: wrap; gap: .6rem 1rem; align-items: flex-end; }
form.filters a { align-self: center; }
label { display: flex; flex-direction: column; gap: .2rem; font-size: .82rem; color: var(--muted); }
input, select, textarea { font: inherit; padding: .35rem .5rem; border: 1px solid #c3c9d4;
  border-radius: 5px; background: #fff; color: var(--ink); }
textarea { width: 100%; min-height: 3.2rem; }
button { font: inherit; padding: .4rem .9rem; border-radius: 5px; border: 1px solid var(--accent);
  background: var(--accent); color: #fff; cursor: pointer; }
button.plain { background: #fff; color: var(--accent); }
.actions { display: flex; flex-wrap: wrap; gap: .5rem; margin-top: .6rem; }
.chips { display: flex; flex-wrap: wrap; gap: .4rem; margin-bottom: 1rem; }
.chip { background: var(--gone-bg); border-radius: 999px; padding: .1rem .6rem; font-size: .85rem; }
.pager { display: flex; gap: 1rem; margin-top: .8rem; }
.muted { color: var(--muted); }
.login { max-width: 460px; margin: 4rem auto; }
.login input { width: 100%; }
""".strip()

STYLE_HASH = "sha256-" + base64.b64encode(hashlib.sha256(CSS.encode()).digest()).decode()


def esc(value: Any) -> str:
    """A value as HTML text (None as nothing)."""
    return "" if value is None else html.escape(str(value), quote=True)


def path_part(value: Any) -> str:
    return quote(str(value), safe="")


def exception_url(exception_id: Any) -> str:
    return f"/console/exceptions/{path_part(exception_id)}"


def entity_url(entity_type: Any, entity_id: Any) -> str:
    return f"/console/entities/{path_part(entity_type)}/{path_part(entity_id)}"


def format_age(ms: int | None) -> str:
    """`3h 12m`, `2d 4h`, `45m`; under a minute `<1m`."""
    if ms is None:
        return ""
    minutes = max(0, ms) // 60_000
    days, rest = divmod(minutes, 24 * 60)
    hours, mins = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {mins}m"
    return f"{mins}m" if mins else "<1m"


def format_instant(value: Any) -> str:
    """An ISO instant as `2026-03-31 09:15:00 UTC` (anything else as given)."""
    ms = instant_ms(value)
    if ms is None:
        return "" if value is None else str(value)
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def age_of(record: Mapping[str, Any], now_ms: int | None) -> int | None:
    created = instant_ms(record.get("created_at"))
    if created is None or now_ms is None:
        return None
    return now_ms - created


def badge(state: Any) -> str:
    text = esc(state)
    return f'<span class="badge {text}">{text}</span>' if text else ""


def plain(value: Any) -> str:
    """A record value in a cell: text as text, structures as indented JSON."""
    if isinstance(value, dict | list):
        return f"<pre>{esc(json.dumps(value, indent=2, sort_keys=True, default=str))}</pre>"
    if value is None:
        return '<span class="muted">null</span>'
    return esc(value)


def kv_table(pairs: Iterable[tuple[str, str]]) -> str:
    """Rows of (label, already-escaped HTML)."""
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{v}</td></tr>" for k, v in pairs)
    return f'<table class="kv"><tbody>{rows}</tbody></table>'


@dataclass(frozen=True, slots=True)
class Viewer:
    """Who is looking: the token's name, whether it may act, the session's CSRF token."""

    name: str
    can_act: bool
    csrf: str


@dataclass(frozen=True, slots=True)
class Notice:
    text: str
    kind: str = "ok"  # ok | error | info


def notice_html(notice: Notice | None) -> str:
    if notice is None:
        return ""
    kind = "" if notice.kind == "ok" else f" {esc(notice.kind)}"
    return f'<div class="notice{kind}" role="status">{esc(notice.text)}</div>'


def layout(title: str, body: str, viewer: Viewer | None = None) -> str:
    """The page around `body` (already HTML): head, style, the top bar."""
    if viewer is None:
        bar = '<a class="brand" href="/console">pssync · operations</a>'
    else:
        scopes = "read + act" if viewer.can_act else "read only"
        bar = (
            '<a class="brand" href="/console">pssync · operations</a>'
            '<a href="/console">Queue</a>'
            f'<span class="who">{esc(viewer.name)} · {scopes}</span>'
            '<form method="post" action="/console/logout">'
            f'<input type="hidden" name="csrf" value="{esc(viewer.csrf)}">'
            '<button type="submit" id="logout">Log out</button></form>'
        )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,">'
        f"<title>{esc(title)} · pssync console</title><style>{CSS}</style></head>"
        f'<body><header class="top">{bar}</header><main>{body}</main></body></html>'
    )


def login_page(nonce: str, next_path: str, notice: Notice | None = None) -> str:
    body = (
        '<div class="card login"><h1>Operations console</h1>'
        '<p class="sub">Sign in with your API token. It is kept in an HttpOnly cookie for '
        "this browser session and never shown again.</p>"
        f"{notice_html(notice)}"
        '<form method="post" action="/console/login" autocomplete="off">'
        f'<input type="hidden" name="nonce" value="{esc(nonce)}">'
        f'<input type="hidden" name="next" value="{esc(next_path)}">'
        '<label>API token<input type="password" name="token" id="token" required '
        'autofocus spellcheck="false"></label>'
        '<div class="actions"><button type="submit" id="login">Sign in</button></div>'
        "</form></div>"
    )
    return layout("Sign in", body)


def error_page(viewer: Viewer | None, title: str, message: str) -> str:
    body = (
        f'<div class="card"><h1>{esc(title)}</h1><p>{esc(message)}</p>'
        '<p><a href="/console">Back to the queue</a></p></div>'
    )
    return layout(title, body, viewer)


# -- the queue ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QueueQuery:
    """The queue page's filters as the URL carries them (`state` "any" = every state;
    absent = OPEN, the work still to do)."""

    state: str = "OPEN"
    rule: str = ""
    entity_type: str = ""
    entity_id: str = ""
    assignee: str = ""
    age: str = ""
    cursor: str = ""

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> QueueQuery:
        def get(name: str) -> str:
            return (query.get(name) or "").strip()[:200]

        return cls(
            state=get("state") or "OPEN",
            rule=get("rule"),
            entity_type=get("entity_type"),
            entity_id=get("entity_id"),
            assignee=get("assignee"),
            age=get("age"),
            cursor=get("cursor"),
        )

    def filters(self) -> dict[str, str | None]:
        """Keyword arguments for `OpsService.list_exceptions` (None: any)."""
        return {
            "state": None if self.state == ANY_STATE else self.state,
            "rule": self.rule or None,
            "entity_type": self.entity_type or None,
            "entity_id": self.entity_id or None,
            "assignee": self.assignee or None,
            "age": self.age or None,
        }

    def url(self, cursor: str | None = None) -> str:
        params = {
            "state": self.state,
            "rule": self.rule,
            "entity_type": self.entity_type,
            "entity_id": self.entity_id,
            "assignee": self.assignee,
            "age": self.age,
            "cursor": cursor or "",
        }
        kept = {k: v for k, v in params.items() if v and not (k == "state" and v == "OPEN")}
        return "/console" + (f"?{urlencode(kept)}" if kept else "")


def _options(values: Sequence[tuple[str, str]], chosen: str) -> str:
    return "".join(
        f'<option value="{esc(v)}"{" selected" if v == chosen else ""}>{esc(label)}</option>'
        for v, label in values
    )


def _filters_form(query: QueueQuery, rules: Sequence[str]) -> str:
    states = [(s, s) for s in STATES] + [(ANY_STATE, "any state")]
    rule_options = [("", "any rule")] + [(r, r) for r in rules]
    types = [("", "any type")] + [(t, t) for t in ENTITY_TYPES]
    ages = [("", "any age")] + [(a, AGE_LABELS.get(a, a)) for a in AGE_NAMES]
    return (
        '<form class="filters card" method="get" action="/console">'
        f'<label>State<select name="state">{_options(states, query.state)}</select></label>'
        f'<label>Rule<select name="rule">{_options(rule_options, query.rule)}</select></label>'
        '<label>Entity type<select name="entity_type">'
        f"{_options(types, query.entity_type)}</select></label>"
        '<label>Entity id<input name="entity_id" size="12" '
        f'value="{esc(query.entity_id)}"></label>'
        f'<label>Assignee<input name="assignee" size="12" value="{esc(query.assignee)}"></label>'
        f'<label>Age<select name="age">{_options(ages, query.age)}</select></label>'
        '<button type="submit">Filter</button>'
        '<a href="/console">Reset</a></form>'
    )


def _summary_html(summary: Mapping[str, Any]) -> str:
    by_rule = (summary.get("open_exceptions") or {}).get("by_rule") or {}
    total = (summary.get("open_exceptions") or {}).get("total", 0)
    alerts = (summary.get("open_alerts") or {}).get("total", 0)
    chips = "".join(
        f'<a class="chip" href="{esc(QueueQuery(rule=rule).url())}">{esc(rule)}: '
        f"{sum(int(n) for n in buckets.values())}</a>"
        for rule, buckets in sorted(by_rule.items())
    )
    stream = summary.get("stream_time")
    when = (
        f" Ages are measured on the firm's stream time, {esc(format_instant(stream))}."
        if stream
        else ""
    )
    return (
        f'<p class="sub">{esc(total)} open exceptions, {esc(alerts)} open drift alerts.{when}</p>'
        f'<div class="chips">{chips}</div>'
    )


def queue_page(
    viewer: Viewer,
    query: QueueQuery,
    page: Mapping[str, Any],
    summary: Mapping[str, Any],
    notice: Notice | None = None,
) -> str:
    """The queue: filters, the page of exceptions (oldest first), the next-page link."""
    now_ms = instant_ms(summary.get("stream_time"))
    held = set((summary.get("open_exceptions") or {}).get("by_rule") or {})
    rules = sorted(set(EXCEPTION_RULES) | held | ({query.rule} if query.rule else set()))
    rows = []
    for item in page.get("items") or []:
        link = exception_url(item.get("exception_id"))
        rows.append(
            "<tr>"
            f'<td class="mono">{esc(format_age(age_of(item, now_ms)))}</td>'
            f'<td><a href="{esc(link)}">{esc(item.get("rule"))}</a></td>'
            f"<td>{badge(item.get('state'))}</td>"
            f'<td><a href="{esc(entity_url(item.get("entity_type"), item.get("entity_id")))}">'
            f"{esc(item.get('entity_type'))} {esc(item.get('entity_id'))}</a></td>"
            f"<td>{esc(item.get('reason'))}</td>"
            f"<td>{esc(item.get('assignee'))}</td>"
            f'<td class="mono">{esc(format_instant(item.get("created_at")))}</td>'
            "</tr>"
        )
    if rows:
        table = (
            '<table id="queue"><thead><tr><th>Age</th><th>Rule</th><th>State</th>'
            "<th>Entity</th><th>Reason</th><th>Assignee</th><th>Created</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>"
        )
    else:
        table = '<p class="muted" id="queue-empty">No exceptions match these filters.</p>'
    pager = []
    if query.cursor:
        pager.append(f'<a href="{esc(query.url())}">« First page</a>')
    following = page.get("next")
    if following:
        pager.append(f'<a id="next-page" href="{esc(query.url(str(following)))}">Next page »</a>')
    body = (
        "<h1>Exceptions</h1>"
        f"{_summary_html(summary)}"
        f"{notice_html(notice)}"
        f"{_filters_form(query, rules)}"
        f'<div class="card">{table}<div class="pager">{"".join(pager)}</div></div>'
    )
    return layout("Queue", body, viewer)


# -- one exception ------------------------------------------------------------------


def _causation_table(refs: Sequence[Mapping[str, Any]]) -> str:
    if not refs:
        return '<p class="muted">No source positions recorded.</p>'
    rows = "".join(
        "<tr>"
        f'<td class="mono">{esc(r.get("topic"))}</td><td>{esc(r.get("partition"))}</td>'
        f"<td>{esc(r.get('offset'))}</td><td class='mono'>{esc(r.get('key'))}</td>"
        f"<td>{esc(r.get('lsn'))}</td><td class='mono'>{esc(format_instant(r.get('ts_ms')))}</td>"
        "</tr>"
        for r in refs
    )
    return (
        '<table class="causation"><thead><tr><th>Topic</th><th>Partition</th><th>Offset</th>'
        f"<th>Key</th><th>LSN</th><th>Source time</th></tr></thead><tbody>{rows}</tbody></table>"
    )


def _lineage(record: Mapping[str, Any]) -> str:
    trail = record.get("trail")
    if not trail:
        return _causation_table(record.get("causation") or [])
    parts = []
    for step in trail:
        parts.append(
            f'<p class="muted">correlation <code>{esc(step.get("correlation_id"))}</code></p>'
            f"{_causation_table(step.get('causation') or [])}"
        )
    return "".join(parts)


def _history(lines: Sequence[Mapping[str, Any]]) -> str:
    if not lines:
        return '<p class="muted">No history yet.</p>'
    rows = []
    for line in lines:
        if line.get("kind") == "action":
            what = f"action <b>{esc(line.get('action'))}</b> {badge(line.get('outcome'))}"
            who = line.get("who")
            detail = " — ".join(esc(x) for x in (line.get("detail"), line.get("note")) if x)
            ident = f'<br><span class="muted mono">{esc(line.get("action_id"))}</span>'
        else:
            resolution = line.get("resolution") or {}
            what = f"state {badge(line.get('state'))}"
            who = resolution.get("who")
            bits = []
            if resolution.get("action"):
                bits.append(f"by action {resolution['action']}")
            if resolution.get("note"):
                bits.append(f"note: {resolution['note']}")
            if line.get("assignee"):
                bits.append(f"assigned to {line['assignee']}")
            detail = esc("; ".join(bits))
            ident = ""
        rows.append(
            f'<tr><td class="mono">{esc(format_instant(line.get("at")))}</td>'
            f"<td>{what}{ident}</td><td>{esc(who)}</td><td>{detail}</td>"
            f'<td class="mono">{esc(line.get("correlation_id"))}</td></tr>'
        )
    return (
        '<table id="history"><thead><tr><th>When (event time)</th><th>What</th><th>Who</th>'
        f"<th>Detail</th><th>Correlation</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _action_forms(viewer: Viewer, record: Mapping[str, Any]) -> str:
    if record.get("state") != "OPEN":
        return '<p class="muted">This exception is no longer open; no action applies.</p>'
    if not viewer.can_act:
        return (
            f'<p class="muted">The token {esc(viewer.name)} may read but not act '
            "(it lacks the act scope).</p>"
        )
    target = esc(exception_url(record.get("exception_id")) + "/actions")
    csrf = f'<input type="hidden" name="csrf" value="{esc(viewer.csrf)}">'
    buttons = [
        '<button type="submit" name="action" value="dismiss" id="act-dismiss">Dismiss</button>',
        '<button type="submit" name="action" value="retry" id="act-retry" class="plain">'
        "Retry (evaluate again)</button>",
    ]
    period = (record.get("context") or {}).get("next_open_period")
    if record.get("rule") == "TIME_IN_CLOSED_PERIOD" and period:
        buttons.insert(
            0,
            '<button type="submit" name="action" value="post_to_next_open_period" '
            f'id="act-post">Post to next open period ({esc(period)})</button>',
        )
    return (
        '<div class="grid">'
        f'<form class="card" method="post" action="{target}" id="resolve-form">{csrf}'
        "<h2>Resolve</h2><label>Note (kept with the resolution)"
        '<textarea name="note" id="note" maxlength="2000"></textarea></label>'
        f'<div class="actions">{"".join(buttons)}</div></form>'
        f'<form class="card" method="post" action="{target}" id="assign-form">{csrf}'
        '<h2>Assign</h2><label>Assignee<input name="assignee" id="assignee" maxlength="200" '
        f'value="{esc(record.get("assignee") or "")}" required></label>'
        '<label>Note<textarea name="note" maxlength="2000"></textarea></label>'
        '<div class="actions"><button type="submit" name="action" value="assign" '
        'id="act-assign" class="plain">Assign</button></div></form></div>'
    )


def accepted_notice(record: Mapping[str, Any], action_id: str) -> Notice:
    """What to say after an action was accepted: its outcome once the flow wrote it."""
    for line in record.get("history") or []:
        if line.get("kind") == "action" and line.get("action_id") == action_id:
            detail = f": {line['detail']}" if line.get("detail") else ""
            return Notice(f"Action {action_id} accepted; outcome {line.get('outcome')}{detail}.")
    return Notice(
        f"Action {action_id} accepted. Its outcome appears here once the flow that owns "
        "the entity has applied it: refresh to see it.",
        "info",
    )


def exception_page(
    viewer: Viewer,
    record: Mapping[str, Any],
    stream_time: Any = None,
    notice: Notice | None = None,
) -> str:
    """One exception: what, why, the lineage, the history, and the actions."""
    now_ms = instant_ms(stream_time)
    context = record.get("context") or {}
    context_html = (
        kv_table((k, plain(v)) for k, v in context.items())
        if context
        else '<p class="muted">No context.</p>'
    )
    resolution = record.get("resolution")
    entity = entity_url(record.get("entity_type"), record.get("entity_id"))
    facts: list[tuple[str, str]] = [
        ("Exception id", f'<span class="mono">{esc(record.get("exception_id"))}</span>'),
        ("State", badge(record.get("state"))),
        (
            "Entity",
            f'<a id="entity-link" href="{esc(entity)}">'
            f"{esc(record.get('entity_type'))} {esc(record.get('entity_id'))}</a>",
        ),
        ("Created (event time)", esc(format_instant(record.get("created_at")))),
        ("Age", esc(format_age(age_of(record, now_ms)))),
        ("Owner", f'<span class="mono">{esc(record.get("owner"))}</span>'),
        ("Assignee", esc(record.get("assignee")) or '<span class="muted">nobody</span>'),
        ("Correlation id", f'<span class="mono">{esc(record.get("correlation_id"))}</span>'),
    ]
    if resolution:
        facts.append(
            (
                "Resolution",
                esc(
                    f"{resolution.get('action')} by {resolution.get('who')} at "
                    f"{format_instant(resolution.get('when'))}"
                    + (f" — {resolution['note']}" if resolution.get("note") else "")
                ),
            )
        )
    body = (
        f'<p class="sub"><a href="/console">« Queue</a></p>'
        f"<h1>{esc(record.get('rule'))} {badge(record.get('state'))}</h1>"
        f'<p class="sub" id="reason">{esc(record.get("reason"))}</p>'
        f"{notice_html(notice)}"
        '<div class="grid">'
        f'<div class="card"><h2>Facts</h2>{kv_table(facts)}</div>'
        f'<div class="card"><h2>Context</h2>{context_html}</div></div>'
        f'<div class="card"><h2>Remediation</h2><p id="remediation">'
        f"{esc(record.get('remediation'))}</p>"
        f"{_action_forms(viewer, record)}</div>"
        f'<div class="card"><h2>History</h2>{_history(record.get("history") or [])}</div>'
        f'<div class="card"><h2>Lineage (what caused it)</h2>{_lineage(record)}</div>'
    )
    return layout(str(record.get("rule") or "Exception"), body, viewer)


# -- one entity ---------------------------------------------------------------------


def _findings(findings: Sequence[Mapping[str, Any]]) -> str:
    if not findings:
        return '<p class="muted">No open findings.</p>'
    rows = []
    for f in findings:
        if f.get("exception_id"):
            kind = "exception"
            name = f'<a href="{esc(exception_url(f["exception_id"]))}">{esc(f.get("rule"))}</a>'
            text = f.get("reason")
        else:
            kind = f"alert {f.get('severity') or ''}".strip()
            name = esc(f.get("rule"))
            text = f.get("remediation")
        rows.append(
            f"<tr><td>{esc(kind)}</td><td>{name}</td><td>{badge(f.get('state'))}</td>"
            f"<td>{esc(text)}</td></tr>"
        )
    return (
        '<table id="findings"><thead><tr><th>Kind</th><th>Rule</th><th>State</th><th>What</th>'
        f"</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _commands(commands: Sequence[Mapping[str, Any]]) -> str:
    if not commands:
        return '<p class="muted">No recent commands.</p>'
    rows = "".join(
        f"<tr><td>{esc(c.get('type'))}</td>"
        f'<td class="mono">{esc(format_instant(c.get("issued_at")))}</td>'
        f'<td class="mono">{esc(c.get("command_id"))}</td>'
        f"<td>{plain(c.get('payload'))}</td></tr>"
        for c in commands
    )
    return (
        '<table id="commands"><thead><tr><th>Type</th><th>Issued</th><th>Command id</th>'
        f"<th>Payload</th></tr></thead><tbody>{rows}</tbody></table>"
    )


def entity_page(viewer: Viewer, entity_type: str, entity_id: str, found: Mapping[str, Any]) -> str:
    """An entity: its golden record, open findings and recent commands."""
    golden = found.get("golden")
    golden_html = (
        kv_table((k, plain(v)) for k, v in golden.items())
        if isinstance(golden, dict)
        else '<p class="muted">No golden record (none is kept for this type, or not yet).</p>'
    )
    listing = QueueQuery(state=ANY_STATE, entity_type=entity_type, entity_id=entity_id).url()
    body = (
        f'<p class="sub"><a href="/console">« Queue</a> · <a href="{esc(listing)}">'
        "its exceptions</a></p>"
        f"<h1>{esc(entity_type)} {esc(entity_id)}</h1>"
        f'<div class="card"><h2>Golden record</h2>{golden_html}</div>'
        f'<div class="card"><h2>Open findings</h2>'
        f"{_findings(found.get('open_findings') or [])}</div>"
        f'<div class="card"><h2>Recent commands</h2>'
        f"{_commands(found.get('recent_commands') or [])}</div>"
    )
    return layout(f"{entity_type} {entity_id}", body, viewer)
