"""`pssync exceptions list | show | act` against a local fake of the operations API.

The fake (tests/ops_api_fake.py) answers with the API's shapes; what is tested is the
CLI's own logic: flags to query parameters, paging, rendering, ages on stream time,
--wait, HTTP failures to exit codes, and that the token is never printed (`run` checks
every output). The end-to-end check against a real worker is separate.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from pssync.cli import api_client
from pssync.cli import exceptions as cli
from pssync.cli.main import main
from tests.ops_api_fake import ACT_TOKEN, READ_TOKEN, FakeApi, make_exception, serving


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeApi]:
    """A fake API on a free port, with PSSYNC_API_URL and an act token in the environment."""
    fake = FakeApi()
    with serving(fake) as url:
        monkeypatch.setenv("PSSYNC_API_URL", url)
        monkeypatch.setenv("PSSYNC_API_TOKEN", ACT_TOKEN)
        monkeypatch.setattr(cli, "POLL_FIRST_S", 0.05)
        monkeypatch.setattr(cli, "OUTCOME_GRACE_S", 0.4)
        yield fake


@dataclass
class Result:
    code: int
    out: str
    err: str


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> Result:
    """`pssync exceptions ARGV` in-process; checks that no token reaches the output."""
    capsys.readouterr()
    try:
        code = main(["exceptions", *argv])
    except SystemExit as exc:  # argparse's usage errors
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    for token in (READ_TOKEN, ACT_TOKEN):
        assert token not in captured.out + captured.err
    return Result(code, captured.out, captured.err)


def ids(out: str) -> list[str]:
    return [json.loads(line)["exception_id"] for line in out.splitlines()]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def seed_three(api: FakeApi) -> None:
    api.add(
        make_exception(1, dt.timedelta(days=2, hours=4, minutes=10)),
        make_exception(2, dt.timedelta(hours=2, minutes=5, seconds=30), assignee="bob"),
        make_exception(
            3, dt.timedelta(seconds=50), rule="ERP_EMPLOYEE_WITHOUT_HR_WORKER",
            entity_type="worker", entity_id="W3", state="DISMISSED",
        ),
    )  # fmt: skip


# ---- list ---------------------------------------------------------------------------------


def test_list_is_a_table_oldest_first_aged_on_stream_time(
    api: FakeApi, capsys: pytest.CaptureFixture[str]
) -> None:
    seed_three(api)

    r = run(capsys, "list")

    assert (r.code, r.err) == (0, "")
    assert r.out.splitlines() == [
        "ID      RULE                            STATE      ENTITY          AGE    ASSIGNEE",
        "exc-01  TIME_IN_CLOSED_PERIOD           OPEN       time_entry:TE1  2d04h  -",
        "exc-02  TIME_IN_CLOSED_PERIOD           OPEN       time_entry:TE2  2h05m  bob",
        "exc-03  ERP_EMPLOYEE_WITHOUT_HR_WORKER  DISMISSED  worker:W3       50s    -",
    ]
    assert [(s.path, s.query) for s in api.seen] == [("/api/exceptions", {}), ("/api/summary", {})]
    assert {s.authorization for s in api.seen} == {f"Bearer {ACT_TOKEN}"}


def test_list_ages_on_the_wall_clock_without_a_stream_time(
    api: FakeApi, capsys: pytest.CaptureFixture[str]
) -> None:
    api.stream_time = None
    api.add(make_exception(1, dt.timedelta(days=3, hours=1, minutes=30), dt.datetime.now(dt.UTC)))

    r = run(capsys, "list")

    assert r.out.splitlines()[1].split()[4] == "3d01h"


def test_list_sends_every_filter_as_a_query_parameter(
    api: FakeApi, capsys: pytest.CaptureFixture[str]
) -> None:
    seed_three(api)

    r = run(capsys, "list", "--state", "open", "--rule", "TIME_IN_CLOSED_PERIOD",
            "--entity-type", "time_entry", "--entity-id", "TE2", "--assignee", "bob",
            "--older-than", "1h30m", "--limit", "5")  # fmt: skip

    assert r.code == 0, r.err
    assert api.seen[0].query == {
        "state": "OPEN", "rule": "TIME_IN_CLOSED_PERIOD", "entity_type": "time_entry",
        "entity_id": "TE2", "assignee": "bob", "min_age_s": "5400", "limit": "5",
    }  # fmt: skip
    assert [line.split()[0] for line in r.out.splitlines()] == ["ID", "exc-02"]


def test_older_than_holds_even_where_the_server_ignores_min_age_s(
    api: FakeApi, capsys: pytest.CaptureFixture[str]
) -> None:
    seed_three(api)

    day = run(capsys, "list", "--json", "--older-than", "1d")
    hour = run(capsys, "list", "--json", "--older-than", "2h")
    second = run(capsys, "list", "--json", "--older-than", "60")

    assert (day.code, ids(day.out)) == (0, ["exc-01"])
    assert ids(hour.out) == ["exc-01", "exc-02"]
    assert ids(second.out) == ["exc-01", "exc-02"]
    assert json.loads(day.out) == api.records["exc-01"]


def test_list_without_all_is_one_page_and_says_how_to_get_more(
    api: FakeApi, capsys: pytest.CaptureFixture[str]
) -> None:
    api.add(*(make_exception(n, dt.timedelta(hours=10 - n)) for n in range(1, 6)))

    first = run(capsys, "list", "--limit", "2", "--json")
    cursor = first.err.split("--cursor ")[1].split()[0]
    second = run(capsys, "list", "--limit", "2", "--json", "--cursor", cursor)

    assert (first.code, ids(first.out)) == (0, ["exc-01", "exc-02"])
    assert first.err == f"more exceptions: add --all, or --cursor {cursor} for the next page\n"
    assert api.seen[-1].query == {"limit": "2", "cursor": cursor}
    assert ids(second.out) == ["exc-03", "exc-04"]
    assert [s.path for s in api.seen] == ["/api/exceptions"] * 2  # --json: no need of ages


def test_list_all_follows_the_cursor_with_progress(
    api: FakeApi, capsys: pytest.CaptureFixture[str]
) -> None:
    api.add(*(make_exception(n, dt.timedelta(hours=100 - n)) for n in range(1, 26)))

    r = run(capsys, "list", "--all", "--limit", "2", "--json")

    assert r.code == 0
    assert ids(r.out) == [f"exc-{n:02d}" for n in range(1, 26)]
    assert [s.query.get("cursor") is None for s in api.seen] == [True] + [False] * 12
    assert r.err == "pssync exceptions list: 10 pages, 20 exceptions so far\n"


def test_list_all_as_a_table_has_one_header(
    api: FakeApi, capsys: pytest.CaptureFixture[str]
) -> None:
    api.add(*(make_exception(n, dt.timedelta(hours=100 - n)) for n in range(1, 8)))

    r = run(capsys, "list", "--all", "--limit", "3")

    assert (r.code, r.err) == (0, "")
    assert [line.split()[0] for line in r.out.splitlines()] == ["ID"] + [
        f"exc-{n:02d}" for n in range(1, 8)
    ]
    assert [s.path for s in api.seen].count("/api/summary") == 1


def test_list_with_nothing_to_show(api: FakeApi, capsys: pytest.CaptureFixture[str]) -> None:
    r = run(capsys, "list", "--state", "OPEN")

    assert (r.code, r.out, r.err) == (0, "", "no exceptions match\n")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["list", "--older-than", "soon"], "'soon' is not a duration like 90s, 15m, 1h30m, 2d"),
        (["list", "--limit", "0"], "'0' is not a whole number >= 1"),
        (["list", "--timeout", "-1"], "'-1' is not a number of seconds > 0"),
        (["act", "exc-01", "dismiss", "--wait", "inf"], "'inf' is not a number of seconds > 0"),
        (["act", "exc-01", "delete"], "argument ACTION: invalid choice: 'delete'"),
        (["show"], "the following arguments are required: ID"),
    ],
)
def test_bad_flags_are_usage_errors(
    api: FakeApi, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    r = run(capsys, *argv)

    assert r.code == api_client.EXIT_USAGE
    assert message in r.err
    assert api.seen == []


# ---- show ---------------------------------------------------------------------------------


def test_show_is_readable(api: FakeApi, capsys: pytest.CaptureFixture[str]) -> None:
    seed_three(api)
    api.history["exc-02"].append(
        {"kind": "action", "action_id": "a-1", "action": "assign", "outcome": "APPLIED",
         "detail": "assigned", "who": "ops-alice", "assignee": "bob", "note": "payroll",
         "at": "2026-03-05T10:00:00Z", "recorded_at": "x", "via": "console"}
    )  # fmt: skip
    api.records["exc-02"]["escalation"] = {"level": 2}

    r = run(capsys, "show", "exc-02")

    assert (r.code, r.err) == (0, "")
    assert r.out.splitlines() == [
        "exception    exc-02",
        "rule         TIME_IN_CLOSED_PERIOD",
        "state        OPEN",
        "entity       time_entry:TE2",
        "owner        worker:W2",
        "assignee     bob",
        "created      2026-03-05T09:54:30Z (2h05m old)",
        "correlation  cdc:psa.time_entry:2",
        "reason       time entry TE2 falls in closed period 2026-02",
        "",
        "context",
        "  legal_entity: -",
        "  next_open_period: 2026-03",
        "  period_id: 2026-02",
        "",
        "remediation",
        "  Post the entry into the next open period of the same legal entity, or dismiss it if",
        "  the hours were already booked by hand.",
        "",
        "causation",
        "  cdc.psa.time_entry[1]@42 key=TE2 lsn=9002 at 2026-03-03T01:06:40Z",
        "",
        "trail (the causes of each version, by correlation id)",
        "  cdc:psa.time_entry:2",
        "    cdc.psa.time_entry[1]@42 key=TE2 lsn=9002 at 2026-03-03T01:06:40Z",
        "",
        "history",
        "  2026-03-05T09:54:30Z  state  OPEN assignee=bob",
        '  2026-03-05T10:00:00Z  action assign by ops-alice -> bob: APPLIED (assigned) "payroll" '
        "[a-1] via=console",
        "",
        "escalation",
        '  {"level": 2}',
    ]


def test_show_json_is_the_api_document(api: FakeApi, capsys: pytest.CaptureFixture[str]) -> None:
    seed_three(api)

    r = run(capsys, "show", "exc-01", "--json")

    document = json.loads(r.out)
    assert r.code == 0
    assert document["history"] == api.history["exc-01"]
    assert {k: v for k, v in document.items() if k in api.records["exc-01"]} == api.records[
        "exc-01"
    ]
    assert [s.path for s in api.seen] == ["/api/exceptions/exc-01"]


def test_show_quotes_the_id_into_the_path(api: FakeApi, capsys: pytest.CaptureFixture[str]) -> None:
    r = run(capsys, "show", "a/b c")

    assert api.seen[0].path == "/api/exceptions/a/b c"  # aiohttp's decoded a%2Fb%20c
    assert (r.code, r.out, r.err) == (
        api_client.EXIT_NOT_FOUND,
        "",
        "pssync exceptions show: GET /api/exceptions/a%2Fb%20c -> HTTP 404 not found: "
        "unknown_exception: no exception 'a/b c'\n",
    )


# ---- act ----------------------------------------------------------------------------------


def test_act_posts_the_action_and_prints_its_id(
    api: FakeApi, capsys: pytest.CaptureFixture[str]
) -> None:
    seed_three(api)

    r = run(capsys, "act", "exc-01", "dismiss", "--note", "known test worker")

    [post] = api.seen
    action_id = post.body["action_id"]
    assert (r.code, r.out, r.err) == (0, f"{action_id}\n", "")
    assert (post.method, post.path) == ("POST", "/api/exceptions/exc-01/actions")
    assert uuid.UUID(action_id).version == 4
    assert post.body == {"action": "dismiss", "note": "known test worker", "action_id": action_id}


def test_act_sends_the_given_action_id_and_assignee(
    api: FakeApi, capsys: pytest.CaptureFixture[str]
) -> None:
    seed_three(api)

    r = run(capsys, "act", "exc-01", "assign", "--assignee", "carol", "--action-id", "act-77")

    assert (r.code, r.out) == (0, "act-77\n")
    assert api.seen[0].body == {
        "action": "assign", "note": None, "action_id": "act-77", "assignee": "carol"
    }  # fmt: skip


def test_act_wait_prints_the_applied_outcome(
    api: FakeApi, capsys: pytest.CaptureFixture[str]
) -> None:
    seed_three(api)

    r = run(capsys, "act", "exc-01", "dismiss", "--action-id", "a-9", "--wait", "10")

    assert (r.code, r.out, r.err) == (0, "a-9\nAPPLIED: dismissed\n", "")
    assert [s.method for s in api.seen] == ["GET", "POST", "GET", "GET"]
    shown = run(capsys, "show", "exc-01").out.splitlines()
    assert shown[shown.index("history") + 1 :] == [
        "  2026-03-03T07:50:00Z  state  OPEN",
        "  2026-03-05T12:00:00Z  state  DISMISSED by ops-alice (dismiss)",
        "  2026-03-05T12:00:00Z  action dismiss by ops-alice: APPLIED (dismissed) [a-9]",
    ]


def test_act_wait_exits_1_when_the_action_did_not_apply(
    api: FakeApi, capsys: pytest.CaptureFixture[str]
) -> None:
    seed_three(api)
    api.outcome = "not_applicable"

    r = run(capsys, "act", "exc-01", "post_to_next_open_period", "--action-id", "a-2",
            "--wait", "10")  # fmt: skip

    assert (r.code, r.out) == (
        cli.EXIT_NOT_APPLIED,
        "a-2\nNOT_APPLICABLE: period 2026-03 is no longer open\n",
    )


def test_act_wait_ends_on_a_change_of_state(
    api: FakeApi, capsys: pytest.CaptureFixture[str]
) -> None:
    seed_three(api)
    api.outcome = "state_only"

    r = run(capsys, "act", "exc-01", "dismiss", "--note", "dup", "--wait", "10")

    action_id = api.seen[1].body["action_id"]
    assert (r.code, r.out) == (
        0,
        f'{action_id}\nDISMISSED: was OPEN by ops-alice (dismiss) at 2026-03-05T12:00:00Z "dup"\n',
    )


def test_act_wait_prefers_the_outcome_that_follows_a_change_of_state(
    api: FakeApi, capsys: pytest.CaptureFixture[str]
) -> None:
    seed_three(api)
    api.outcome = "late"

    r = run(capsys, "act", "exc-01", "dismiss", "--action-id", "a-4", "--wait", "10")

    assert (r.code, r.out) == (0, "a-4\nAPPLIED: dismissed\n")
    assert [s.method for s in api.seen] == ["GET", "POST", "GET", "GET", "GET"]


def test_a_change_of_state_by_another_action_is_not_this_one_applied() -> None:
    exc = {"state": "RESOLVED", "resolution": {"who": "bob", "action": "retry", "when": "t"}}

    verdict = cli.judge_wait(exc, "a-1", "dismiss", {"state": "OPEN"})

    assert verdict == (cli.EXIT_NOT_APPLIED, "RESOLVED: was OPEN by bob (retry) at t", False)


def test_act_wait_times_out(api: FakeApi, capsys: pytest.CaptureFixture[str]) -> None:
    seed_three(api)
    api.outcome = "never"

    started = time.monotonic()
    r = run(capsys, "act", "exc-01", "retry", "--action-id", "a-3", "--wait", "0.6")

    assert 0.6 <= time.monotonic() - started < 3
    assert (r.code, r.out, r.err) == (
        cli.EXIT_WAIT_TIMEOUT,
        "a-3\n",
        "pssync exceptions act: no outcome for action a-3 within 0.6s\n",
    )


def test_act_assignee_goes_with_assign_only(
    api: FakeApi, capsys: pytest.CaptureFixture[str]
) -> None:
    r = run(capsys, "act", "exc-01", "assign")
    other = run(capsys, "act", "exc-01", "dismiss", "--assignee", "bob")

    assert (r.code, r.err) == (2, "pssync exceptions act: assign needs --assignee NAME\n")
    assert (other.code, other.err) == (
        2,
        "pssync exceptions act: --assignee goes with the assign action only\n",
    )
    assert api.seen == []


# ---- connection, auth and failures --------------------------------------------------------


def test_no_token_is_an_auth_error_with_a_hint(
    api: FakeApi, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PSSYNC_API_TOKEN")

    r = run(capsys, "list")

    assert api.seen[0].authorization is None
    assert (r.code, r.out, r.err) == (
        api_client.EXIT_AUTH,
        "",
        "pssync exceptions list: GET /api/exceptions -> HTTP 401 unauthorised: unauthorized: "
        "a valid bearer token is needed; give a valid token with PSSYNC_API_TOKEN or --token\n",
    )


def test_a_token_echoed_by_the_server_is_not_printed(
    api: FakeApi, capsys: pytest.CaptureFixture[str]
) -> None:
    api.forced = [(401, json.dumps({"error": "unauthorized", "message": f"bad {ACT_TOKEN}"}), {})]

    r = run(capsys, "list")  # `run` asserts that neither token is in the output

    assert r.code == api_client.EXIT_AUTH
    assert r.err.endswith(": bad ***; give a valid token with PSSYNC_API_TOKEN or --token\n")


def test_flags_override_the_environment_before_or_after_the_verb(
    api: FakeApi, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    seed_three(api)
    monkeypatch.setenv("PSSYNC_API_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("PSSYNC_API_TOKEN", "not-a-token")

    before = run(capsys, "--api-url", api.url, "--token", READ_TOKEN, "show", "exc-01")
    after = run(capsys, "show", "exc-01", "--api-url", api.url, "--token", READ_TOKEN)

    assert (before.code, after.code, before.out) == (0, 0, after.out)
    assert {s.authorization for s in api.seen} == {f"Bearer {READ_TOKEN}"}


Answer = tuple[int, str, dict[str, str]]
LIMITED: Answer = (429, '{"error": "rate_limited", "message": "slow"}', {"Retry-After": "0"})
LOOPING: Answer = (200, json.dumps({"items": [], "next": "c1"}), {})
TOO_LARGE: Answer = (413, '{"error": "too_large", "message": "64k"}', {})
# argv, answers forced (each one used), delay, exit code, the line after "pssync exceptions "
FAILURES = {
    "400 query": (["list", "--limit", "500"], [], 0, 2, "list: GET /api/exceptions -> HTTP 400 "
                  "rejected: invalid_query: limit: from 1 to 100"),
    "403 scope": (["act", "exc-01", "dismiss", "--token", READ_TOKEN], [], 0, 3,
                  "act: POST /api/exceptions/exc-01/actions -> HTTP 403 forbidden: forbidden: "
                  "token dash lacks the act scope; the token lacks the scope (read, or act for "
                  "actions)"),
    "404 nested": (["show", "exc-01"], [(404, '{"error": {"code": "gone", "message": "n"}}', {})],
                   0, 4, "show: GET /api/exceptions/exc-01 -> HTTP 404 not found: gone: n"),
    "404 text": (["show", "exc-01"], [(404, '{"error": "just text"}', {})], 0, 4,
                 "show: GET /api/exceptions/exc-01 -> HTTP 404 not found: just text"),
    "409 closed": (["act", "exc-03", "dismiss"], [], 0, 5, "act: POST /api/exceptions/exc-03/"
                   "actions -> HTTP 409 conflict: not_open: the exception is DISMISSED, not OPEN"),
    "413 size": (["act", "exc-01", "retry"], [TOO_LARGE], 0, 2, "act: POST /api/exceptions/"
                 "exc-01/actions -> HTTP 413 rejected: too large: too_large: 64k"),
    "429 always": (["list"], [LIMITED] * (api_client.RATE_LIMIT_RETRIES + 1), 0, 6,
                   "list: GET /api/exceptions -> HTTP 429 rate limited, still after retries: "
                   "rate_limited: slow"),
    "500 json": (["show", "exc-01"], [(500, '{"error": "internal", "message": "boom"}', {})], 0, 6,
                 "show: GET /api/exceptions/exc-01 -> HTTP 500 failed: internal: boom"),
    "502 html": (["show", "exc-01"], [(502, "<html>\n<b>Bad gateway</b>\n</html>", {})], 0, 6,
                 "show: GET /api/exceptions/exc-01 -> HTTP 502 failed: <html> <b>Bad gateway</b> "
                 "</html>"),
    "503 on act": (["act", "exc-01", "dismiss", "--action-id", "a-5"],
                   [(503, "upstream broker unavailable", {})], 0, 6,
                   "act: POST /api/exceptions/exc-01/actions -> HTTP 503 failed: upstream broker "
                   "unavailable; it may have been recorded: to retry safely, repeat with "
                   "--action-id a-5 (an action id is applied once)"),
    "not json": (["show", "exc-01"], [(200, "not json", {})], 0, 6,
                 "show: GET /api/exceptions/exc-01: the answer is not JSON"),
    "not object": (["show", "exc-01"], [(200, "[1, 2]", {})], 0, 6,
                   "show: GET /api/exceptions/exc-01: the answer is not a JSON object"),
    "cursor loop": (["list", "--all", "--json"], [LOOPING] * 2, 0, 6,
                    "list: GET /api/exceptions: the server repeated a cursor"),
    "timeout": (["list", "--timeout", "0.2"], [], 1.0, 6,
                "list: GET /api/exceptions: no answer from {url} within 0.2s"),
    "bad url": (["list", "--api-url", "localhost:6066"], [], 0, 2,
                "list: --api-url 'localhost:6066': expected http(s)://HOST[:PORT]"),
}  # fmt: skip


@pytest.mark.parametrize(
    ("argv", "forced", "delay_s", "code", "line"), FAILURES.values(), ids=FAILURES.keys()
)
def test_a_failure_is_one_line_and_an_exit_code(
    api: FakeApi,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    forced: list[Answer],
    delay_s: float,
    code: int,
    line: str,
) -> None:
    seed_three(api)
    api.forced, api.delay_s = list(forced), delay_s

    r = run(capsys, *argv)

    assert (r.code, r.out, r.err) == (code, "", f"pssync exceptions {line.format(url=api.url)}\n")
    assert api.forced == []


def test_unreachable_api(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"

    r = run(capsys, "list", "--api-url", url, "--token", ACT_TOKEN)

    assert r.code == api_client.EXIT_SERVER
    assert r.err.startswith(f"pssync exceptions list: cannot reach {url}: ")
    assert "refused" in r.err
    assert r.err.count("\n") == 1


@pytest.mark.parametrize(
    "answer",
    [LIMITED, (503, '{"error": "owner_unreachable", "message": "x"}', {"Retry-After": "0"})],
)
def test_a_request_asked_to_wait_is_retried(
    api: FakeApi, capsys: pytest.CaptureFixture[str], answer: Answer
) -> None:
    seed_three(api)
    api.forced = [answer, answer]

    r = run(capsys, "show", "exc-01", "--json")

    assert (r.code, len(api.seen), json.loads(r.out)["exception_id"]) == (0, 3, "exc-01")


def test_redirects_are_refused_so_the_token_stays_here(
    api: FakeApi, capsys: pytest.CaptureFixture[str]
) -> None:
    api.forced = [(307, "", {"Location": f"{api.url}/leak"})]

    r = run(capsys, "list")

    assert [s.path for s in api.seen] == ["/api/exceptions"]
    assert (r.code, r.err) == (
        api_client.EXIT_SERVER,
        "pssync exceptions list: GET /api/exceptions -> HTTP 307 redirect refused "
        "(check --api-url)\n",
    )


# ---- pure parts and the installed command -------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("90s", 90), ("15m", 900), ("1h", 3600), ("1h30m", 5400), ("2d", 172800),
     ("1w", 604800), ("1.5h", 5400), (" 4H ", 14400)],
)  # fmt: skip
def test_parse_duration(text: str, seconds: int) -> None:
    assert cli.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "h", "1x", "1h 30m", "-5m", "1h30"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(Exception, match="is not a duration"):
        cli.parse_duration(text)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(-3, "0s"), (0, "0s"), (59, "59s"), (60, "1m"), (3599, "59m"), (3600, "1h00m"),
     (7530, "2h05m"), (86400, "1d00h"), (187800, "2d04h")],
)  # fmt: skip
def test_format_age(seconds: int, text: str) -> None:
    assert cli.format_age(seconds) == text


def test_help_explains_with_examples_and_exit_codes() -> None:
    def help_of(*argv: str) -> str:
        return subprocess.run(
            [sys.executable, "-m", "pssync", *argv, "--help"],
            capture_output=True, text=True, check=True, timeout=60,
        ).stdout  # fmt: skip

    top, verbs = help_of(), help_of("exceptions")
    listing, act = help_of("exceptions", "list"), help_of("exceptions", "act")

    assert "the operations queue: list, show and act on exceptions" in top
    assert verbs.startswith("usage: pssync exceptions [-h] [--api-url URL] [--token TOKEN]")
    for flag in ["--state", "--rule", "--entity-type", "--entity-id", "--assignee",
                 "--older-than", "--limit", "--all", "--json", "PSSYNC_API_URL",
                 "PSSYNC_API_TOKEN"]:  # fmt: skip
        assert flag in listing
    assert "pssync exceptions list --all --json | jq -r .exception_id" in listing
    assert "  5  conflict (409): the action does not apply to this exception" in act
    assert "post_to_next_open_period" in act
    assert "--wait S" in act


def test_the_installed_command_exits_with_the_code_and_never_the_token(api: FakeApi) -> None:
    seed_three(api)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PSSYNC_")}
    env |= {"PSSYNC_API_URL": api.url, "PSSYNC_API_TOKEN": READ_TOKEN}

    def pssync(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pssync", "exceptions", *argv],
            capture_output=True, text=True, env=env, check=False, timeout=60,
        )  # fmt: skip

    ok, denied = pssync("show", "exc-02"), pssync("act", "exc-02", "dismiss")

    assert (ok.returncode, ok.stderr) == (0, "")
    assert ok.stdout.startswith("exception    exc-02\n")
    assert (denied.returncode, denied.stdout) == (api_client.EXIT_AUTH, "")
    assert "HTTP 403 forbidden" in denied.stderr
    assert READ_TOKEN not in ok.stdout + ok.stderr + denied.stdout + denied.stderr
