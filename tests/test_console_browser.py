"""The console in a real browser against a real worker: sign in, dismiss, post to the
next open period, and the effects on the real topics.

Headless Chromium driven by Selenium through Debian's `chromium` and `chromium-driver`
(./run test installs them); a missing browser, driver or Kafka fails the test, never
skips it. With `PSSYNC_SCREENSHOT=<path>` the exception page is saved there as a PNG
(docs/console.png in the README comes from it).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.wait import WebDriverWait

from pssync.api.auth import hash_token
from pssync.avro.contract import CDC_TOPICS
from pssync.settings import Settings
from tests import scenarios
from tests.conftest import SettingsFactory, WorkerFactory, WorkerHandle
from tests.kafka_helpers import collect, create_topics, produce_cli, wait_drained

pytestmark = pytest.mark.kafka

OPERATOR = "ops-carol"
NEXT_OPEN = "LE1:2026-03"  # T3 (2026-02-27) is in the closed LE1:2026-02


def eventually(what: str, probe: Callable[[], Any], timeout_s: float = 90) -> Any:
    """`probe()` once it is truthy; fails the test with `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(0.5)
    pytest.fail(f"{what}: not within {timeout_s:.0f}s")


def wait_for_url(browser: webdriver.Chrome, part: str) -> str:
    """The browser's URL once it holds `part` (a click's navigation has landed)."""
    WebDriverWait(browser, 15).until(expected_conditions.url_contains(part))
    return str(browser.current_url)


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    chromium = shutil.which("chromium")
    driver = shutil.which("chromedriver")
    if chromium is None or driver is None:
        pytest.fail(
            "the browser test needs Debian's chromium and chromium-driver "
            "(apt-get install chromium chromium-driver; ./run test installs them)"
        )
    options = Options()
    options.binary_location = chromium
    for arg in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,1000",
        "--lang=en-US",
    ):
        options.add_argument(arg)
    try:
        chrome = webdriver.Chrome(options=options, service=Service(executable_path=driver))
    except WebDriverException as exc:
        pytest.fail(f"headless Chromium did not start: {exc.msg}")
    chrome.set_page_load_timeout(30)
    chrome.implicitly_wait(5)  # elements of a page still loading
    try:
        yield chrome
    finally:
        chrome.quit()


def api_exceptions(worker: WorkerHandle, token: str, **query: str) -> list[dict[str, Any]]:
    url = f"{worker.url}/api/exceptions?{urllib.parse.urlencode(query | {'limit': '500'})}"
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as resp:
        items: list[dict[str, Any]] = json.loads(resp.read())["items"]
    return items


def feed_the_firm(settings: Settings, tmp_path: Path) -> None:
    """The scenario firm up to its time entries: T3 lands in a closed period whose
    legal entity has a later open one; T4 has no cost rate."""
    topics = [settings.topic(t) for t in CDC_TOPICS]
    internal = [settings.internal_topic(t) for t in ("worker-keyed", "project-keyed")]
    for phase in (scenarios.reference_and_erp(), scenarios.psa_and_hr()):
        produce_cli(settings, phase, tmp_path)
        wait_drained(settings, topics + internal)


def act_in_the_browser(
    browser: webdriver.Chrome, worker: WorkerHandle, rule: str, button: str, note: str
) -> str:
    """From the queue, open the exception of `rule`, act with `note`; wait until the
    page shows the outcome. Returns the exception id."""
    browser.get(f"{worker.url}/console?rule={rule}")
    browser.find_element(By.LINK_TEXT, rule).click()
    url = wait_for_url(browser, "/console/exceptions/")
    exception_id = urllib.parse.unquote(url.rsplit("/", 1)[1])
    browser.find_element(By.ID, "note").send_keys(note)
    if button == "act-post" and os.environ.get("PSSYNC_SCREENSHOT"):
        screenshot(browser, Path(os.environ["PSSYNC_SCREENSHOT"]))
    browser.find_element(By.ID, button).click()
    wait_for_url(browser, "?accepted=")
    notice = browser.find_element(By.CSS_SELECTOR, "[role=status]").text
    accepted = re.match(r"Action (\S+) accepted", notice)
    assert accepted, notice

    def applied() -> bool:
        browser.refresh()
        return "outcome APPLIED" in browser.find_element(By.CSS_SELECTOR, "[role=status]").text

    eventually(f"the outcome of {button} on {exception_id}", applied)
    history = browser.find_element(By.ID, "history").text
    assert accepted.group(1) in history
    assert OPERATOR in history
    assert 'id="act-dismiss"' not in browser.page_source, "no action on a closed exception"
    return exception_id


def screenshot(browser: webdriver.Chrome, path: Path) -> None:
    """The whole page, as tall as it is (the window grows by what its frame takes)."""
    size = browser.get_window_size()
    frame = size["height"] - int(browser.execute_script("return window.innerHeight"))
    height = int(browser.execute_script("return document.documentElement.scrollHeight"))
    browser.set_window_size(size["width"], min(height, 4000) + frame)
    path.parent.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(path)), path
    browser.set_window_size(size["width"], size["height"])


def test_an_operator_dismisses_and_posts_to_the_next_open_period(
    settings_factory: SettingsFactory,
    worker_factory: WorkerFactory,
    browser: webdriver.Chrome,
    tmp_path: Path,
) -> None:
    token = secrets.token_urlsafe(24)
    settings = settings_factory(
        api_tokens=f"{OPERATOR}:read+act:{hash_token(token)}",
        source_idle_s=0.5,
        tick_interval_s=0.2,
    )
    create_topics(settings)
    worker = worker_factory(settings)
    feed_the_firm(settings, tmp_path)

    def queued() -> bool:
        rules = {e["rule"] for e in api_exceptions(worker, token, state="OPEN")}
        return {"TIME_IN_CLOSED_PERIOD", "TIME_MISSING_COST_RATE"} <= rules

    eventually("the open exceptions in the worker's queue view", queued)

    # signing in: the queue asks for a token first
    browser.get(f"{worker.url}/console")
    assert "/console/login" in browser.current_url
    browser.find_element(By.ID, "token").send_keys(token)
    browser.find_element(By.ID, "login").click()
    WebDriverWait(browser, 15).until(lambda b: b.current_url.endswith("/console"))
    queue = browser.find_element(By.ID, "queue").text
    assert "TIME_IN_CLOSED_PERIOD" in queue
    assert "TIME_MISSING_COST_RATE" in queue
    assert OPERATOR in browser.find_element(By.CSS_SELECTOR, "header .who").text
    assert token not in browser.page_source
    cookie = browser.get_cookie("pssync_console")
    assert cookie is not None
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"

    dismissed = act_in_the_browser(
        browser, worker, "TIME_MISSING_COST_RATE", "act-dismiss", "rate comes next month"
    )
    posted = act_in_the_browser(
        browser, worker, "TIME_IN_CLOSED_PERIOD", "act-post", "late approval, February"
    )

    # the effects, on the real topics
    def resolved() -> dict[str, dict[str, Any]] | None:
        records = collect(settings, ["sync.exceptions"], idle_s=1.0)
        latest = {r["key"]: r["value"] for r in records}
        done = all(latest.get(e, {}).get("resolution") for e in (dismissed, posted))
        return latest if done else None

    exceptions = eventually("DISMISSED and RESOLVED on sync.exceptions", resolved, 30)
    assert exceptions[dismissed]["state"] == "DISMISSED"
    assert exceptions[dismissed]["resolution"]["who"] == OPERATOR
    assert exceptions[dismissed]["resolution"]["action"] == "dismiss"
    assert exceptions[dismissed]["resolution"]["note"] == "rate comes next month"
    assert exceptions[posted]["state"] == "RESOLVED"
    assert exceptions[posted]["resolution"]["who"] == OPERATOR
    assert exceptions[posted]["resolution"]["action"] == "post_to_next_open_period"
    assert exceptions[posted]["resolution"]["note"] == "late approval, February"

    commands = collect(settings, ["erp.cmd.time_entry"], idle_s=1.0)
    posts = [
        c["value"]
        for c in commands
        if c["value"]["type"] == "POST_TIME_ENTRY" and c["value"]["entity_id"] == "T3"
    ]
    assert [p["payload"]["period_id"] for p in posts] == [NEXT_OPEN]

    # the entity page of the entry now lists the command
    browser.find_element(By.ID, "entity-link").click()
    wait_for_url(browser, "/console/entities/time_entry/T3")
    assert "POST_TIME_ENTRY" in browser.find_element(By.ID, "commands").text

    browser.get(f"{worker.url}/console")
    browser.find_element(By.ID, "logout").click()
    wait_for_url(browser, "/console/login?bye=1")
    assert browser.get_cookie("pssync_console") is None
    assert token not in worker.log(0)
