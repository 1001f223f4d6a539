"""Which worker holds which partition, and asking it over HTTP.

Ownership: each worker announces, after every assignment (and, empty, when it
stops), the partitions of pssync's keyed internal topics it holds, as a `Claim` on
the internal topic `<prefix><app_id>-api-peers` (one partition, compacted, keyed by
the worker's URL, `PSSYNC_ADVERTISED_URL`). Every worker reads that topic
(`api.feed`) into a `Directory`: a partition belongs to the newest claim that names
it, "newest" being the later offset on the single partition, i.e. the order the
broker took the claims in, not any worker's clock. After a rebalance the new owner
claims after the rebalance, so after the old owner's claim; a worker that died
without saying so is superseded as soon as its partitions are assigned elsewhere.

Why not Faust's assignor (`app.assignor.external_topics_metadata()`, where Faust
puts every member's `canonical_url`): Faust only uses its own assignor when the app
has changelog tables or standby replicas, and pssync has neither (its state is its
own RocksDB stores), so the group runs aiokafka's round-robin assignor and that
metadata stays empty.

A forwarded request carries the caller's own Authorization header (the owner checks
the token again, and the actor stays the caller) and `X-Pssync-Forwarded: 1`. A
worker never forwards a request that carries that header: if the ownership it was
forwarded on is stale (a rebalance in between), the caller gets an error to retry,
never a loop between two workers. Every API answer names the worker that computed it
in `X-Pssync-Served-By`; a forwarded one also names the worker that forwarded it in
`X-Pssync-Forwarded-By`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

log = logging.getLogger(__name__)

FORWARDED_HEADER = "X-Pssync-Forwarded"
SERVED_BY_HEADER = "X-Pssync-Served-By"
FORWARDED_BY_HEADER = "X-Pssync-Forwarded-By"
TIMEOUT_S = 10.0


def normal_url(url: Any) -> str:
    return str(url).rstrip("/")


@dataclass(frozen=True, slots=True)
class Reply:
    """A peer's answer: status, JSON body (None if it was not JSON), who served it."""

    status: int
    body: Any
    served_by: str
    headers: dict[str, str] = field(default_factory=dict)


class PeerUnreachable(Exception):
    """The peer did not answer (connection refused, timeout)."""


PEERS_TOPIC = "api-peers"  # Settings.internal_topic(PEERS_TOPIC)


@dataclass(frozen=True, slots=True)
class Claim:
    """What one worker holds: physical internal topic -> partitions (versioned record)."""

    VERSION = 1

    url: str
    partitions: dict[str, list[int]]

    def to_bytes(self) -> bytes:
        body = {"v": self.VERSION, "url": self.url, "partitions": self.partitions}
        return json.dumps(body, sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> Claim:
        """ValueError for anything but a version-1 claim."""
        body = json.loads(raw)
        if not isinstance(body, dict) or body.get("v") != cls.VERSION:
            raise ValueError("not a version-1 claim")
        url, partitions = body.get("url"), body.get("partitions")
        if not isinstance(url, str) or not isinstance(partitions, dict):
            raise ValueError("a claim needs url and partitions")
        return cls(
            normal_url(url),
            {str(t): sorted(int(p) for p in ps) for t, ps in partitions.items()},
        )


class Directory:
    """Each worker's latest claim, read from the peers topic in order (module doc)."""

    def __init__(self) -> None:
        self._claims: dict[str, tuple[int, Claim]] = {}

    def apply(self, offset: int, claim: Claim) -> None:
        current = self._claims.get(claim.url)
        if current is None or offset > current[0]:
            self._claims[claim.url] = (offset, claim)

    def owner_of(self, topic: str, partition: int) -> str | None:
        best: tuple[int, str] | None = None
        for url, (offset, claim) in self._claims.items():
            if partition in claim.partitions.get(topic, ()) and (best is None or offset > best[0]):
                best = (offset, url)
        return None if best is None else best[1]

    def holders_of(self, topic: str) -> list[str]:
        """URLs owning at least one partition of `topic`."""
        found = set()
        for _, claim in self._claims.values():
            for partition in claim.partitions.get(topic, ()):
                if self.owner_of(topic, partition) == claim.url:
                    found.add(claim.url)
        return sorted(found)

    def members(self) -> list[str]:
        """URLs of the workers whose latest claim holds anything."""
        return sorted(url for url, (_, c) in self._claims.items() if any(c.partitions.values()))


class Peers:
    """The group's workers as the directory shows them, and HTTP to them."""

    def __init__(self, directory: Directory, self_url: str) -> None:
        self.directory = directory
        self.self_url = normal_url(self_url)
        self._session: aiohttp.ClientSession | None = None

    def claim(self, assigned: Iterable[tuple[str, int]], internal_prefix: str) -> Claim:
        """This worker's claim for its assignment (the keyed internal topics in it)."""
        partitions: dict[str, list[int]] = {}
        for topic, partition in assigned:
            if topic.startswith(internal_prefix):
                partitions.setdefault(topic, []).append(partition)
        return Claim(self.self_url, {t: sorted(ps) for t, ps in sorted(partitions.items())})

    def owner_of(self, topic: str, partition: int) -> str | None:
        """The URL of the worker that holds `partition` of physical `topic`, if known."""
        return self.directory.owner_of(topic, partition)

    def holders_of(self, topic: str) -> list[str]:
        """URLs of the workers holding any partition of physical `topic`."""
        return self.directory.holders_of(topic)

    def others(self) -> list[str]:
        """Every other worker's URL."""
        return [url for url in self.directory.members() if url != self.self_url]

    def is_self(self, url: str) -> bool:
        return normal_url(url) == self.self_url

    async def call(
        self,
        url: str,
        method: str,
        path: str,
        authorization: str | None,
        body: bytes | None = None,
    ) -> Reply:
        """`method path` on the worker at `url`, marked as forwarded."""
        headers = {FORWARDED_HEADER: "1", FORWARDED_BY_HEADER: self.self_url}
        if authorization:
            headers["Authorization"] = authorization
        if body is not None:
            headers["Content-Type"] = "application/json"
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT_S))
        try:
            async with self._session.request(
                method, normal_url(url) + path, headers=headers, data=body
            ) as resp:
                raw = await resp.read()
                try:
                    payload = await resp.json(content_type=None) if raw else None
                except ValueError:
                    payload = None
                kept = {k: v for k, v in resp.headers.items() if k.lower() in ("retry-after",)}
                return Reply(resp.status, payload, resp.headers.get(SERVED_BY_HEADER, url), kept)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            log.warning("forwarding %s %s to %s failed: %s", method, path, url, exc)
            raise PeerUnreachable(url) from exc

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
