"""`pssync worker`: prepare Kafka and the registry, then run the Faust worker.

The worker is a static member of its consumer group (KIP-345, `group.instance.id` =
`Settings.group_instance_id`): restarted with the same id, after a clean stop or a
SIGKILL, it gets its partitions back at once, without a rebalance and without waiting
out the session of its previous incarnation. Two live workers must not share an id;
`FencingWatch` turns that mistake into a clear error instead of a silent loop of the
two taking the membership from each other.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from typing import NoReturn

import faust

from pssync.app import create_app, prepare_worker
from pssync.logs import setup_logging
from pssync.settings import Settings

log = logging.getLogger(__name__)

# aiokafka's coordinator logs a refused member id on a heartbeat ("local member_id was
# not recognized") or on an offset commit ("... UnknownMemberIdError ...")
COORDINATOR_LOGGER = "aiokafka.consumer.group_coordinator"
REFUSED = ("local member_id was not recognized", "UnknownMemberIdError")
# one refusal reaches several requests at once (a commit per partition, a heartbeat)
BURST_S = 1.0


class WorkerConflict(ValueError):
    """Another worker on this host already uses this worker's port (and so its id)."""


class FencingWatch(logging.Handler):
    """Notices a static member losing its membership to another live member.

    When a second consumer joins with the same group.instance.id, the broker hands it the
    membership and forgets the first's member id; the first's next heartbeat or commit is
    refused (unknown member id), it rejoins with the same id and takes the membership
    back, and so on every few seconds: both process the same partitions, their commits
    fail, and neither says why. A legitimate loss (the session expired while this
    process was stalled, or an operator removed the member) happens once per session
    timeout at most, so `limit` refusals within one session timeout mean a duplicate id.
    """

    def __init__(
        self,
        settings: Settings,
        on_fenced: Callable[[str], None],
        limit: int = 3,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(logging.WARNING)
        self.instance_id = settings.group_instance_id
        self.group_id = settings.group_id
        self.window_s = settings.session_timeout_s
        self.limit = limit
        self.on_fenced = on_fenced
        self.clock = clock
        self.refusals: collections.deque[float] = collections.deque()
        self.reason: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if self.reason is not None:
            return
        message = record.getMessage()
        if not any(marker in message for marker in REFUSED):
            return
        now = self.clock()
        if self.refusals and now - self.refusals[-1] < BURST_S:
            return
        self.refusals.append(now)
        while now - self.refusals[0] > self.window_s:
            self.refusals.popleft()
        if len(self.refusals) >= self.limit:
            self.reason = (
                f"another consumer of group {self.group_id!r} uses this worker's instance "
                f"id {self.instance_id!r}: the broker gave it this worker's membership "
                f"{len(self.refusals)} times in {self.window_s:.0f}s. Two live workers "
                "must not share PSSYNC_INSTANCE_ID; give each its own (or leave it "
                "unset: <host name>-<web port>)"
            )
            self.on_fenced(self.reason)

    def install(self) -> None:
        logger = logging.getLogger(COORDINATOR_LOGGER)
        if logger.getEffectiveLevel() > logging.WARNING:
            logger.setLevel(logging.WARNING)  # the refusal is a warning: keep seeing it
        logger.addHandler(self)


def check_port(settings: Settings) -> None:
    """Fail fast, before joining the group, when another process listens on our port: on
    one host the port is what keeps two workers' default instance ids apart."""
    family = socket.AF_INET6 if ":" in settings.web_host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((settings.web_host, settings.web_port))
        except OSError as exc:
            raise WorkerConflict(
                f"PSSYNC_WEB_PORT={settings.web_port} on {settings.web_host} is in use "
                f"({exc.strerror}): is another worker running here? Each worker on a "
                "host needs its own port (its default instance id is <host name>-<port>)"
            ) from None


class Worker(faust.Worker):
    """Faust's worker, stopping without mode's extra second.

    After every service has stopped and every task is gathered, mode runs a "sentinel"
    task that sleeps one second before it closes the event loop: a clean stop then
    takes over a second longer than the stop itself. Nothing of pssync is pending by
    then (outputs are flushed before each batch's offsets are committed), so a short
    pause for the last callbacks does."""

    async def _sentinel_task(self) -> None:
        await asyncio.sleep(0.05)


def _stop_self(reason: str) -> None:
    """From any thread: log why, then stop the way a SIGTERM does (a clean shutdown)."""
    log.error("stopping: %s", reason)
    os.kill(os.getpid(), signal.SIGTERM)


def process_age_s() -> float | None:
    """Seconds since this process started (Linux), to log what start-up costs before
    `run_worker` (the interpreter and the imports)."""
    try:
        with open("/proc/self/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return uptime - ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def run_worker(settings: Settings) -> NoReturn:
    started = time.monotonic()
    setup_logging(settings)
    age = process_age_s()
    log.info(
        "preparing (process started %ss ago): kafka=%s registry=%s app_id=%s prefix=%r "
        "instance_id=%s guarantee=%s",
        "?" if age is None else f"{age:.2f}",
        settings.kafka_bootstrap,
        settings.schema_registry_url,
        settings.app_id,
        settings.topic_prefix,
        settings.group_instance_id or "none (dynamic membership)",
        settings.processing_guarantee
        + (f" (transactional.id {settings.transactional_id})" if settings.exactly_once else ""),
    )
    check_port(settings)
    codec, partitions = prepare_worker(settings)
    prepared = time.monotonic()
    app, _ = create_app(settings, codec, partitions)
    log.info(
        "prepared in %.2fs, app created in %.2fs",
        prepared - started,
        time.monotonic() - prepared,
    )
    watch: FencingWatch | None = None
    if settings.group_instance_id is not None:
        watch = FencingWatch(settings, _stop_self)
        watch.install()
    worker = Worker(
        app,
        loglevel=settings.log_level,
        quiet=True,
        redirect_stdouts=False,
        override_logging=False,
    )
    try:
        worker.execute_from_commandline()
    except SystemExit:
        if watch is not None and watch.reason is not None:
            raise SystemExit(f"pssync worker: {watch.reason}") from None
        raise
