"""`pssync exceptions list | show | act`: the operations queue from a terminal, over HTTP.

A thin client of the operations API (domain.md, "Operations API"; transport in
`pssync.cli.api_client`): any worker's HTTP port answers for the whole firm. It keeps
no state; what it adds is paging (`--all` follows the `next` cursor), readable output,
a client-chosen action id (so a retried POST is harmless: the API and the flow that
applies actions both treat a repeated id as the same action) and `--wait`, which polls
the exception until its history shows what the action did.

Ages are measured on the firm's stream time (`stream_time` of GET /api/summary), as the
API measures them, so a replayed firm reads as it did live; the wall clock stands in
only when the API has no stream time. Failures print one line on stderr and exit with a
code a script can branch on (EXIT_*, listed in `--help`); the token is never printed,
not even when a server echoes it back.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import re
import sys
import textwrap
import time
import urllib.parse
import uuid
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, TextIO

from pssync.cli.api_client import EXIT_SERVER, EXIT_USAGE, ApiClient, ApiFailure

DEFAULT_API_URL = "http://localhost:6066"
DEFAULT_TIMEOUT_S = 10.0
ACTIONS = ("dismiss", "retry", "post_to_next_open_period", "assign")
# list's filters, sent as query parameters of the same names
FILTERS = ("state", "rule", "entity_type", "entity_id", "assignee")

EXIT_OK = 0
EXIT_NOT_APPLIED = 1  # --wait: the action's outcome is NOT_APPLICABLE
EXIT_WAIT_TIMEOUT = 7  # --wait: no outcome within S seconds

POLL_FIRST_S = 0.2
POLL_MAX_S = 2.0
# --wait: how long a change of state may stand in for the action's outcome before it counts
OUTCOME_GRACE_S = 3.0
# --all: one progress line on stderr every this many pages
PROGRESS_EVERY_PAGES = 10

EXIT_CODES_HELP = """\
exit codes:
  0  done (with --wait: the action was APPLIED)
  1  act --wait: the action's outcome is NOT_APPLICABLE (or something else closed it)
  2  usage: bad flags, or the API rejected the request (400, 413, 422)
  3  authentication: no or unknown token (401), token without the scope (403)
  4  not found (404)
  5  conflict (409): the action does not apply to this exception
  6  server error (5xx), rate limited (429) after retries, unreachable, timed out
  7  act --wait: no outcome within the wait"""


# ---- values and rendering --------------------------------------------------------------


def parse_duration(text: str) -> int:
    """`90`, `90s`, `15m`, `1h30m`, `2d`, `1w` -> whole seconds (argparse type)."""
    spec = text.strip().lower()
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    if re.fullmatch(r"\d+(\.\d+)?", spec):
        return round(float(spec))
    parts = re.findall(r"(\d+(?:\.\d+)?)([smhdw])", spec)
    if not parts or "".join(n + u for n, u in parts) != spec:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 90s, 15m, 1h30m, 2d")
    return round(sum(float(n) * units[u] for n, u in parts))


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 1")
    return int(text)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds > 0")
    return value


def _instant(value: Any) -> dt.datetime | None:
    """An instant of the JSON form (ISO string) or epoch milliseconds, in UTC."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return dt.datetime.fromtimestamp(value / 1000, dt.UTC)
    if isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
    return None


def _when(value: Any) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        instant = _instant(value)
        if instant is None:
            return str(value)
        spec = "milliseconds" if instant.microsecond else "seconds"
        return instant.isoformat(timespec=spec).replace("+00:00", "Z")
    return "-" if value is None else str(value)


def format_age(seconds: float) -> str:
    """Seconds -> `45s`, `12m`, `3h05m`, `2d04h`."""
    s = max(int(seconds), 0)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def _age(exc: Mapping[str, Any], now: dt.datetime) -> str:
    created = _instant(exc.get("created_at"))
    return format_age((now - created).total_seconds()) if created else "-"


def _text(value: Any) -> str:
    if value is None or value == "":
        return "-"
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _note(value: Any) -> str:
    return f" {json.dumps(value, ensure_ascii=False)}" if value else ""


def _entity(exc: Mapping[str, Any]) -> str:
    return f"{_text(exc.get('entity_type'))}:{_text(exc.get('entity_id'))}"


def render_table(items: Sequence[Mapping[str, Any]], now: dt.datetime) -> list[str]:
    """The queue as aligned columns: id, rule, state, entity, age (at `now`), assignee."""
    rows = [["ID", "RULE", "STATE", "ENTITY", "AGE", "ASSIGNEE"]]
    for exc in items:
        rows.append([_text(exc.get(k)) for k in ("exception_id", "rule", "state")])
        rows[-1] += [_entity(exc), _age(exc, now), _text(exc.get("assignee"))]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows)
    return [line.rstrip() for line in lines]


def _extras(entry: Mapping[str, Any], used: set[str]) -> str:
    rest = [f"{k}={_text(v)}" for k, v in entry.items() if k not in used and v is not None]
    return (" " + " ".join(rest)) if rest else ""


def _resolution(res: Mapping[str, Any], at: Any = None) -> str:
    """Who ended it, how, when (unless `at`, the line's own time) and why."""
    text = f"by {_text(res.get('who'))} ({_text(res.get('action'))})"
    text += f" at {_when(res.get('when'))}" if res.get("when") != at else ""
    return text + _note(res.get("note"))


# in the readable history, fields the JSON keeps but a line need not show
_QUIET = {"at", "kind", "recorded_at", "correlation_id", "causation"}


def render_history_entry(entry: Mapping[str, Any]) -> str:
    """One line: a version of the exception (kind `state`) or an action with its outcome
    (kind `action`); other kinds and unknown fields are shown as key=value."""
    kind = str(entry.get("kind", "?"))
    used = set(_QUIET)
    if kind in ("state", "transition"):
        used |= {"state", "resolution", "assignee"}
        text = _text(entry.get("state"))
        text += f" assignee={entry['assignee']}" if entry.get("assignee") else ""
        resolution = entry.get("resolution")
        text += (
            f" {_resolution(resolution, entry.get('at'))}" if isinstance(resolution, dict) else ""
        )
    elif kind in ("action", "outcome"):
        used |= {"action", "who", "assignee", "outcome", "detail", "note", "action_id"}
        text = _text(entry.get("action"))
        text += f" by {entry['who']}" if entry.get("who") else ""
        text += f" -> {entry['assignee']}" if entry.get("assignee") else ""
        text += f": {entry['outcome']}" if entry.get("outcome") else ""
        text += f" ({entry['detail']})" if entry.get("detail") else ""
        text += _note(entry.get("note")) + f" [{_text(entry.get('action_id'))}]"
    else:
        text = ""
    return f"  {_when(entry.get('at'))}  {kind:<6} {text}{_extras(entry, used)}".rstrip()


_REF_FIELDS = {"topic", "partition", "offset", "key", "lsn", "ts_ms"}


def _ref(ref: Any) -> str:
    """A source position: topic[partition]@offset key=... lsn=... at <ts>."""
    if not isinstance(ref, dict):
        return _text(ref)
    text = f"{_text(ref.get('topic'))}[{_text(ref.get('partition'))}]@{_text(ref.get('offset'))}"
    text += f" key={_text(ref.get('key'))}"
    text += f" lsn={ref['lsn']}" if ref.get("lsn") is not None else ""
    text += f" at {_when(ref['ts_ms'])}" if ref.get("ts_ms") is not None else ""
    return text + _extras(ref, _REF_FIELDS)


_SHOWN = {
    "exception_id", "rule", "state", "entity_type", "entity_id", "owner", "assignee",
    "created_at", "age", "correlation_id", "reason", "resolution", "context",
    "remediation", "causation", "history", "trail",
}  # fmt: skip


def render_detail(exc: Mapping[str, Any], now: dt.datetime) -> list[str]:
    """The exception for a person: what and why, what to do, where it came from (causation,
    and the trail of every version's causes), and its history, oldest first."""
    created = exc.get("created_at")
    head = [
        ("exception", exc.get("exception_id")),
        ("rule", exc.get("rule")),
        ("state", exc.get("state")),
        ("entity", _entity(exc)),
        ("owner", exc.get("owner")),
        ("assignee", exc.get("assignee")),
        ("created", f"{_when(created)} ({_age(exc, now)} old)" if created else None),
        ("correlation", exc.get("correlation_id")),
        ("reason", exc.get("reason")),
    ]
    lines = [f"{k:<12} {_text(v)}" for k, v in head]
    resolution = exc.get("resolution")
    if isinstance(resolution, dict):
        lines.append(f"{'resolution':<12} {_resolution(resolution)}")
    context = exc.get("context")
    if isinstance(context, dict) and context:
        lines += ["", "context"] + [f"  {k}: {_text(v)}" for k, v in sorted(context.items())]
    if exc.get("remediation"):
        lines += ["", "remediation"]
        lines += textwrap.wrap(
            str(exc["remediation"]), width=88, initial_indent="  ", subsequent_indent="  "
        )
    causation = exc.get("causation")
    if isinstance(causation, list) and causation:
        lines += ["", "causation"] + [f"  {_ref(ref)}" for ref in causation]
    trail = exc.get("trail")
    if isinstance(trail, list) and trail:
        lines += ["", "trail (the causes of each version, by correlation id)"]
        for step in trail:
            step = step if isinstance(step, dict) else {"correlation_id": step}
            lines.append(f"  {_text(step.get('correlation_id'))}")
            lines += [f"    {_ref(ref)}" for ref in step.get("causation") or []]
    history = exc.get("history")
    if isinstance(history, list):
        lines += ["", "history"]
        lines += [
            render_history_entry(e) if isinstance(e, dict) else f"  {_text(e)}" for e in history
        ]
        lines += [] if history else ["  (none)"]
    for key in sorted(k for k in exc if k not in _SHOWN and exc[k] not in (None, [], {})):
        values = exc[key] if isinstance(exc[key], list) else [exc[key]]
        lines += ["", key] + [f"  {_text(v)}" for v in values]
    return lines


# ---- commands ---------------------------------------------------------------------------


def _exception_path(exception_id: str) -> str:
    return "/api/exceptions/" + urllib.parse.quote(exception_id, safe="")


def _dict(doc: Any, what: str) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise ApiFailure(EXIT_SERVER, f"{what}: the answer is not a JSON object")
    return doc


def stream_now(client: ApiClient) -> dt.datetime:
    """The firm's stream time, which the API measures ages on; the wall clock if it has
    none yet (or the summary cannot be had: the caller's own request reports failures)."""
    try:
        summary = client.get("/api/summary")
    except ApiFailure:
        summary = None
    found = _instant(summary.get("stream_time")) if isinstance(summary, dict) else None
    return found or dt.datetime.now(dt.UTC)


def fetch_pages(
    client: ApiClient, query: Mapping[str, str | int | None], follow: bool
) -> Iterator[tuple[list[dict[str, Any]], str | None]]:
    """(items, next) per page; with `follow`, every page until `next` is null."""
    params = dict(query)
    seen: set[str] = set()
    while True:
        page = _dict(client.get("/api/exceptions", params), "GET /api/exceptions")
        items, cursor = page.get("items"), page.get("next")
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise ApiFailure(EXIT_SERVER, "GET /api/exceptions: `items` is not a list of objects")
        if cursor is not None and not isinstance(cursor, str):
            raise ApiFailure(EXIT_SERVER, "GET /api/exceptions: `next` is not a string or null")
        yield items, cursor
        if not follow or not cursor:
            return
        if cursor in seen:
            raise ApiFailure(EXIT_SERVER, "GET /api/exceptions: the server repeated a cursor")
        seen.add(cursor)
        params["cursor"] = cursor


def cmd_list(client: ApiClient, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    query: dict[str, str | int | None] = {f: getattr(args, f) for f in FILTERS}
    query |= {"min_age_s": args.older_than, "limit": args.limit, "cursor": args.cursor}
    kept: list[dict[str, Any]] = []
    count = 0
    more: str | None = None
    now: dt.datetime | None = None
    for pages, (page, cursor) in enumerate(fetch_pages(client, query, args.all), start=1):
        more = cursor
        if not now and (args.older_than is not None or not args.json):
            now = stream_now(client)  # after a page, so that a failure is the list's to report
        older = args.older_than
        items = _older(page, now, older) if now and older is not None else page
        count += len(items)
        if args.json:
            for item in items:
                out.write(json.dumps(item, ensure_ascii=False) + "\n")
            out.flush()
        else:
            kept += items
        if args.all and pages % PROGRESS_EVERY_PAGES == 0:
            err.write(f"pssync exceptions list: {pages} pages, {count} exceptions so far\n")
            err.flush()
    if not args.json:
        if kept and now:
            out.write("".join(line + "\n" for line in render_table(kept, now)))
        else:
            err.write("no exceptions match\n")
    if more and not args.all:
        err.write(f"more exceptions: add --all, or --cursor {more} for the next page\n")
    return EXIT_OK


def _older(items: list[dict[str, Any]], now: dt.datetime, min_age_s: int) -> list[dict[str, Any]]:
    """Only the items at least `min_age_s` old at `now`: the API is asked for the same
    (`min_age_s`); filtering here too keeps --older-than true of a server that ignores it."""
    cutoff = now - dt.timedelta(seconds=min_age_s)
    return [i for i in items if (c := _instant(i.get("created_at"))) is None or c <= cutoff]


def cmd_show(client: ApiClient, args: argparse.Namespace, out: TextIO) -> int:
    path = _exception_path(args.exception_id)
    exc = _dict(client.get(path), f"GET {path}")
    if args.json:
        out.write(json.dumps(exc, ensure_ascii=False, indent=2) + "\n")
    else:
        out.write("".join(line + "\n" for line in render_detail(exc, stream_now(client))))
    return EXIT_OK


def find_outcome(history: Any, action_id: str) -> tuple[str, str] | None:
    """(outcome, detail) of `action_id` in an exception's history, if it is there yet."""
    if not isinstance(history, list):
        return None
    for entry in history:
        if not isinstance(entry, dict) or entry.get("action_id") != action_id:
            continue
        outcome, detail = entry.get("outcome"), entry.get("detail")
        if isinstance(outcome, str) and outcome:
            return outcome, "" if detail is None else str(detail)
    return None


def judge_wait(
    exc: Mapping[str, Any], action_id: str, action: str, before: Mapping[str, Any]
) -> tuple[int, str, bool] | None:
    """What the poll has learnt: (exit code, line to print, final), or None to poll again.

    The action's own outcome is final. Failing that, a change of state (applied if the
    resolution names this action) or, for `assign`, of assignee is a provisional answer:
    the outcome travels on its own topic and may show a moment later."""
    found = find_outcome(exc.get("history"), action_id)
    if found:
        outcome, detail = found
        code = EXIT_OK if outcome == "APPLIED" else EXIT_NOT_APPLIED
        return code, f"{outcome}: {detail}" if detail else outcome, True
    state = exc.get("state")
    if state != before.get("state"):
        resolution = exc.get("resolution")
        res = resolution if isinstance(resolution, dict) else {}
        line = f"{_text(state)}: was {_text(before.get('state'))}"
        if res:
            line += " " + _resolution(res)
        return (EXIT_OK if res.get("action") == action else EXIT_NOT_APPLIED), line, False
    assignee = exc.get("assignee")
    if action == "assign" and assignee and assignee != before.get("assignee"):
        return EXIT_OK, f"APPLIED: assignee {assignee}", False
    return None


def cmd_act(client: ApiClient, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if args.action == "assign" and not args.assignee:
        raise ApiFailure(EXIT_USAGE, "assign needs --assignee NAME")
    if args.assignee and args.action != "assign":
        raise ApiFailure(EXIT_USAGE, "--assignee goes with the assign action only")
    path = _exception_path(args.exception_id)
    before = _dict(client.get(path), f"GET {path}") if args.wait else {}
    action_id = args.action_id or str(uuid.uuid4())
    body: dict[str, Any] = {"action": args.action, "note": args.note, "action_id": action_id}
    if args.assignee:
        body["assignee"] = args.assignee
    try:
        reply = _dict(client.post(path + "/actions", body), f"POST {path}/actions")
    except ApiFailure as failure:
        if failure.exit_code == EXIT_SERVER:
            raise ApiFailure(
                EXIT_SERVER,
                f"{failure}; it may have been recorded: to retry safely, repeat with "
                f"--action-id {action_id} (an action id is applied once)",
            ) from None
        raise
    recorded = reply.get("action_id")
    action_id = recorded if isinstance(recorded, str) and recorded else action_id
    out.write(action_id + "\n")
    out.flush()
    if not args.wait:
        return EXIT_OK
    deadline = time.monotonic() + args.wait
    interval = POLL_FIRST_S
    last_error: ApiFailure | None = None
    provisional: tuple[int, str, bool] | None = None
    while True:
        try:
            verdict = judge_wait(
                _dict(client.get(path), f"GET {path}"), action_id, args.action, before
            )
        except ApiFailure as failure:
            if failure.exit_code != EXIT_SERVER:  # a worker restarting is worth waiting out
                raise
            last_error, verdict = failure, None
        if verdict and not verdict[2]:
            if provisional is None:  # give the outcome a moment to show
                deadline = min(deadline, time.monotonic() + OUTCOME_GRACE_S)
            provisional = verdict
        remaining = deadline - time.monotonic()
        answer = verdict if verdict and verdict[2] else provisional if remaining <= 0 else None
        if answer:
            out.write(answer[1] + "\n")
            return answer[0]
        if remaining <= 0:
            break
        time.sleep(min(interval, remaining))
        interval = min(interval * 1.5, POLL_MAX_S)
    since = f" (last error: {last_error})" if last_error else ""
    err.write(
        f"pssync exceptions act: no outcome for action {action_id} within {args.wait:g}s{since}\n"
    )
    return EXIT_WAIT_TIMEOUT


def run_exceptions(
    args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    """Run `pssync exceptions VERB`; returns the exit code (messages never hold the token)."""
    out = out or sys.stdout
    err = err or sys.stderr
    token = getattr(args, "token", None) or os.environ.get("PSSYNC_API_TOKEN") or None
    try:
        url = getattr(args, "api_url", None) or os.environ.get("PSSYNC_API_URL") or DEFAULT_API_URL
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ApiFailure(EXIT_USAGE, f"--api-url {url!r}: expected http(s)://HOST[:PORT]")
        timeout = getattr(args, "timeout", None) or DEFAULT_TIMEOUT_S
        client = ApiClient(url, token, timeout)
        if args.verb == "list":
            return cmd_list(client, args, out, err)
        if args.verb == "show":
            return cmd_show(client, args, out)
        return cmd_act(client, args, out, err)
    except ApiFailure as failure:
        message = str(failure)
        if token:
            message = message.replace(token, "***")
        err.write(f"pssync exceptions {args.verb}: {message}\n")
        return failure.exit_code
    except BrokenPipeError:  # `pssync exceptions list | head`: the reader is gone
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


# ---- parser -----------------------------------------------------------------------------


def _connection(p: argparse.ArgumentParser) -> None:
    # SUPPRESS: the flags work before or after the verb without one hiding the other
    g = p.add_argument_group("connection (override PSSYNC_* environment variables)")
    hidden = argparse.SUPPRESS
    url_help = f"a worker's HTTP address (PSSYNC_API_URL, {DEFAULT_API_URL})"
    g.add_argument("--api-url", metavar="URL", default=hidden, help=url_help)
    token_help = "API token (PSSYNC_API_TOKEN; prefer the variable: flags show in `ps`)"
    g.add_argument("--token", metavar="TOKEN", default=hidden, help=token_help)
    timeout_help = f"seconds to wait for each HTTP answer ({DEFAULT_TIMEOUT_S:g})"
    g.add_argument("--timeout", type=_seconds, metavar="S", default=hidden, help=timeout_help)


def _verb(verbs: Any, name: str, help_: str, description: str, examples: str) -> Any:
    p = verbs.add_parser(
        name,
        help=help_,
        description=textwrap.fill(description, width=88),
        epilog=f"examples:\n{examples}\n\n{EXIT_CODES_HELP}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _connection(p)
    return p


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """The `exceptions` subcommand's parser, with its verbs list, show and act."""
    p: argparse.ArgumentParser = sub.add_parser(
        "exceptions",
        help="the operations queue: list, show and act on exceptions (over the HTTP API)",
        description=textwrap.fill(
            "Lists, shows and acts on the exceptions of the operations queue through the "
            "operations API of any worker (every worker answers for the whole firm). "
            "Needs a token with the read scope, and act for actions.",
            width=88,
        ),
        epilog="examples:\n"
        "  export PSSYNC_API_URL=http://localhost:6066 PSSYNC_API_TOKEN=...\n"
        "  pssync exceptions list --state OPEN --older-than 1d\n"
        "  pssync exceptions show 3f0c...\n"
        '  pssync exceptions act 3f0c... dismiss --note "duplicate of 91ab..." --wait 30\n\n'
        + EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _connection(p)
    verbs = p.add_subparsers(dest="verb", required=True, metavar="VERB")

    lst = _verb(
        verbs,
        "list",
        "the queue, oldest first, as a table or JSON lines",
        "The exceptions that match every filter given, oldest first: a table (id, rule, "
        "state, entity, age, assignee) or, with --json, one exception record per line. "
        "One page unless --all, which follows the cursor to the end.",
        "  pssync exceptions list --state OPEN --rule TIME_IN_CLOSED_PERIOD\n"
        "  pssync exceptions list --entity-type worker --entity-id W17\n"
        "  pssync exceptions list --state OPEN --older-than 4h --assignee alice\n"
        "  pssync exceptions list --all --json | jq -r .exception_id",
    )
    f = lst.add_argument_group("filters")
    f.add_argument("--state", type=str.upper, help="OPEN, RESOLVED or DISMISSED (default: any)")
    f.add_argument("--rule", metavar="RULE", help="a rule id, e.g. TIME_IN_CLOSED_PERIOD")
    f.add_argument("--entity-type", metavar="T", help="worker, project, assignment or time_entry")
    f.add_argument("--entity-id", metavar="I", help="the entity's id")
    f.add_argument("--assignee", metavar="A", help="assigned to A")
    age_help = "at least this old: 90s, 15m, 4h, 1h30m, 2d, 1w"
    f.add_argument("--older-than", type=parse_duration, metavar="AGE", help=age_help)
    page_help = "exceptions per page (the API's default)"
    lst.add_argument("--limit", type=_positive_int, metavar="N", help=page_help)
    lst.add_argument("--cursor", metavar="C", help="start at this page (a `next` cursor)")
    all_help = "follow the cursor through every page (progress on stderr)"
    lst.add_argument("--all", action="store_true", help=all_help)
    lst.add_argument("--json", action="store_true", help="one JSON object per line")

    show = _verb(
        verbs,
        "show",
        "one exception with its context, remediation, causation and history",
        "One exception: what fired and why (reason, context), what to do (remediation), "
        "the source changes that caused it (causation, and the trail of every version's "
        "causes), and its history: its versions, and the actions on it with their outcomes, "
        "oldest first. Ages are on the firm's stream time.",
        "  pssync exceptions show 3f0c2a6e-...\n  pssync exceptions show 3f0c2a6e-... --json",
    )
    show.add_argument("exception_id", metavar="ID", help="the exception_id")
    show.add_argument("--json", action="store_true", help="the API's JSON, as is")

    act = _verb(
        verbs,
        "act",
        "dismiss, retry, post_to_next_open_period or assign",
        "Records an action on an exception and prints its action id. The worker that "
        "owns the entity applies it in event-time order: dismiss (the exception becomes "
        "DISMISSED), retry (its entity is evaluated again), post_to_next_open_period "
        "(TIME_IN_CLOSED_PERIOD only: posts the entry into the next open period; the "
        "exception becomes RESOLVED), assign (sets its assignee). With --wait, polls "
        "until the exception's history shows what the action did, prints that, and exits "
        "1 if it did not apply, 7 if nothing showed in time.",
        "  pssync exceptions act 3f0c... dismiss --note 'known test worker'\n"
        "  pssync exceptions act 3f0c... post_to_next_open_period --note 'late' --wait 30\n"
        "  pssync exceptions act 3f0c... assign --assignee alice\n"
        '  pssync exceptions act 3f0c... retry --action-id "$ID"   # a repeat does nothing',
    )
    act.add_argument("exception_id", metavar="ID", help="the exception_id")
    act.add_argument("action", choices=ACTIONS, metavar="ACTION", help=", ".join(ACTIONS))
    act.add_argument("--note", metavar="N", help="why, for the record (the resolution's note)")
    act.add_argument("--assignee", metavar="A", help="assign: who works on it")
    id_help = "the action's id (default: a new UUID); a retry with the same id does nothing"
    act.add_argument("--action-id", metavar="X", help=id_help)
    wait_help = "wait up to S seconds for the outcome and print it"
    act.add_argument("--wait", type=_seconds, metavar="S", help=wait_help)
    return p
