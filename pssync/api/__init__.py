"""The operations API on every worker's HTTP port: `install(app, rt)` mounts it.

What `install` guarantees, before the web server starts:
- Faust's built-in pages are gone: `/router/...` (cluster topology, and
  `/router/workers/` answered 500), `/table/...` (table data), and the statistics
  or production index at `/`. pssync uses none of them (its routing is its own);
  unregistered, they cannot leak anything, with or without a token.
- The guard (`api.auth.Guard`) runs before every handler: tokens, scopes, rate and
  size limits; `/health`, `/ready` and `/metrics` stay open.
- The JSON routes (`api.routes`) answer from an `OpsService` whose queue view is fed
  by a background reader of the output topics (`api.feed`), started with the app
  and stopped with it.
- After every assignment the worker claims the keyed partitions it holds on the peers
  topic, and an empty claim when it stops (`api.forward`), so that the other workers
  forward entity reads to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
from typing import Any

from faust.web.base import BlueprintManager

from pssync.api.auth import Guard, RateLimiter, TokenBook
from pssync.api.feed import Feed, FeedRecord
from pssync.api.forward import PEERS_TOPIC, Claim, Directory, Peers
from pssync.api.queue import QueueView
from pssync.api.routes import SERVICE_KEY, add_routes
from pssync.api.service import ApiError, KafkaActionSink, OpsService

log = logging.getLogger(__name__)

__all__ = ["SERVICE_KEY", "ApiError", "OpsService", "install"]


def _drop_faust_pages(web: Any) -> None:
    """No Faust blueprint is applied (they are applied when the web server starts)."""
    if web.blueprints.applied:
        raise RuntimeError("pssync.api.install must run before the web server starts")
    web.blueprints = BlueprintManager()


def install(app: Any, rt: Any) -> OpsService:
    """Mount the operations API on the Faust app `app` of the worker runtime `rt`."""
    settings = rt.settings
    book = TokenBook.from_spec(settings.api_tokens)
    guard = Guard(
        book,
        RateLimiter(settings.api_rate_per_s, settings.api_burst),
        settings.api_max_body_bytes,
    )
    web = app.web
    _drop_faust_pages(web)
    web_app = web.web_app
    web_app.middlewares.append(guard.middleware)
    view = QueueView()
    sink = KafkaActionSink(settings)
    peers = Peers(Directory(), settings.canonical_url)
    service = OpsService(settings, rt.codec, view, sink, peers, rt)
    add_routes(web_app, service, settings.api_max_body_bytes)
    _install_console(web_app, service, book)
    guard.announce()

    peers_topic = settings.internal_topic(PEERS_TOPIC)
    topic_ready = asyncio.Event()

    async def announce(claim: Claim) -> None:
        """Claim what this worker holds (once the peers topic exists)."""
        try:
            await topic_ready.wait()
            await sink.send(peers_topic, 0, claim.url.encode(), claim.to_bytes(), [])
        except Exception as exc:  # the others forward to stale owners until the next claim
            log.warning("could not announce this worker's partitions: %s", exc)

    async def on_assigned(_sender: Any, /, *args: Any, signal: Any, **_: Any) -> None:
        assigned = [(tp.topic, tp.partition) for tp in args[0]]
        claim = peers.claim(assigned, settings.internal_topic(""))
        asyncio.get_running_loop().create_task(announce(claim))

    app.on_partitions_assigned.connect(on_assigned)

    @app.task  # type: ignore[untyped-decorator]
    async def ops_feed() -> None:
        """Follow the output and peers topics into the view and the directory, until the
        app stops; then withdraw this worker's claim."""
        loop = asyncio.get_running_loop()

        def applied(batch: list[FeedRecord], caught_up: bool) -> None:
            for r in batch:
                if r.claim is not None:
                    peers.directory.apply(r.offset, r.claim)
                else:
                    view.apply(r.topic, r.key, r.value, r.timestamp_ms, r.offset, r.partition)
            if caught_up:
                service.view_ready = True
                log.info("queue view ready: %d exceptions", len(view))

        def deliver(batch: list[FeedRecord], caught_up: bool) -> None:
            loop.call_soon_threadsafe(applied, batch, caught_up)

        feed = Feed(settings, rt.codec, deliver)
        feed.start()
        try:
            await loop.run_in_executor(None, feed.peers_topic_ready.wait)
            topic_ready.set()
            await asyncio.Event().wait()  # until the app cancels its tasks
        finally:
            if topic_ready.is_set():  # withdraw the claim: nobody forwards here any more
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(announce(peers.claim([], "")), 5.0)
            await loop.run_in_executor(None, feed.stop)
            await loop.run_in_executor(None, sink.close)
            await peers.close()

    return service


def _install_console(web_app: Any, service: OpsService, book: TokenBook) -> None:
    """The console (`pssync.api.console`, server-rendered pages) when it is there."""
    try:
        console = importlib.import_module("pssync.api.console")
    except ModuleNotFoundError as exc:
        if exc.name != "pssync.api.console":
            raise
        return
    console.install(web_app, service, book)
