"""Valid Avro values of the contract's input topics, from a seeded generator."""

from __future__ import annotations

import datetime as dt
import json
import random
from decimal import Decimal
from typing import Any

from bench.fuzz.wire import EPOCH, INGEST_TOPICS, ODD_TEXT, UTC, _image_fields
from pssync.avro.codec import load_schema_text
from pssync.avro.contract import ACTIONS, ACTIONS_TOPIC, ENUMS, TABLES_BY_TOPIC

# -- good values ---------------------------------------------------------------------------


class Values:
    """Valid Avro values of the contract's input topics, from a seeded generator."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.value_schemas = {t: json.loads(load_schema_text(t, "value")) for t in INGEST_TOPICS}

    def text(self, odd: bool = False) -> str:
        rng = self.rng
        base = f"{rng.choice('ABCDEFGH')}-{rng.randrange(1, 40)}"
        if odd or rng.random() < 0.05:
            return base + "".join(rng.choice(ODD_TEXT) for _ in range(rng.randrange(1, 4)))
        return base

    def date(self, edge: bool = False) -> dt.date:
        if edge:
            return self.rng.choice((dt.date(1, 1, 1), dt.date(9999, 12, 31), dt.date(1969, 12, 31)))
        return EPOCH + dt.timedelta(days=self.rng.randrange(19_000, 21_000))

    def instant(self, edge: bool = False) -> dt.datetime:
        if edge:
            return self.rng.choice(
                (
                    dt.datetime(1, 1, 1, tzinfo=UTC),
                    dt.datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC),
                    dt.datetime(1969, 12, 31, 23, 59, 59, tzinfo=UTC),
                )
            )
        ms = 1_700_000_000_000 + self.rng.randrange(0, 200_000_000_000)
        return dt.datetime.fromtimestamp(ms / 1000, tz=UTC)

    def field(self, topic: str, name: str, kind: Any, edge: bool) -> Any:
        rng = self.rng
        allowed = ENUMS.get((topic, name))
        if allowed is not None:
            return rng.choice(sorted(allowed))
        if isinstance(kind, list):
            if rng.random() < 0.3:
                return None
            kind = next(b for b in kind if b != "null")
        if isinstance(kind, dict):
            logical = kind.get("logicalType")
            if logical == "decimal":
                whole = kind["precision"] - kind["scale"]
                return Decimal(rng.randrange(0, 10 ** (whole + 2))).scaleb(-2)
            if logical == "date":
                return self.date(edge)
            if logical == "timestamp-millis":
                return self.instant(edge)
            kind = kind["type"]
        if kind == "string":
            return self.text()
        if kind == "boolean":
            return rng.random() < 0.5
        if kind == "int":
            return rng.randrange(0, 101)
        if kind == "long":
            return rng.randrange(0, 2**40)
        raise ValueError(f"no generator for {kind!r}")

    def image(self, topic: str, entity: str, edge: bool = False) -> dict[str, Any]:
        table = TABLES_BY_TOPIC[topic]
        fields = _image_fields(self.value_schemas[topic])
        out = {f["name"]: self.field(topic, f["name"], f["type"], edge) for f in fields}
        out[table.key[0]] = entity
        return out

    def source(self, topic: str) -> dict[str, Any]:
        rng = self.rng
        _, platform, table = topic.split(".")
        return {
            "version": "2.7",
            "connector": "postgresql",
            "name": "cdc",
            "ts_ms": 1_767_225_600_000 + rng.randrange(0, 10**9),
            "snapshot": rng.choice(("false", "false", "true", "last", None)),
            "db": platform,
            "schema": platform,
            "table": table,
            "txId": rng.choice((None, rng.randrange(1, 10**6))),
            "lsn": rng.choice((None, rng.randrange(1, 2**40))),
        }

    def record(
        self, topic: str, edge: bool = False, upsert: bool = False
    ) -> tuple[Any, dict[str, Any]]:
        """(key, value) as Avro values: a valid change of `topic` (with an after-image
        when `upsert`)."""
        rng = self.rng
        if topic == ACTIONS_TOPIC:
            return self.action()
        entity = self.text()
        table = TABLES_BY_TOPIC[topic]
        op = rng.choice("cur" if upsert else "cudr")
        image = self.image(topic, entity, edge)
        before = None if op in "cr" or rng.random() < 0.5 else self.image(topic, entity, edge)
        after = None if op == "d" else image
        if op == "d" and before is None and rng.random() < 0.5:
            before = image
        value = {
            "before": before,
            "after": after,
            "op": op,
            "ts_ms": rng.choice((None, 1_767_225_600_000)),
            "source": self.source(topic),
        }
        return {table.key[0]: entity}, value

    def action(self) -> tuple[Any, dict[str, Any]]:
        rng = self.rng
        flow = rng.choice(("worker", "project"))
        owner = self.text()
        value = {
            "action_id": f"act-{rng.randrange(10**9)}",
            "action": rng.choice(ACTIONS),
            "exception_id": f"exc-{rng.randrange(10**6)}",
            "rule": "TIME_IN_CLOSED_PERIOD",
            "entity_type": "time_entry" if flow == "worker" else "project",
            "entity_id": self.text(),
            "owner": f"{flow}:{owner}",
            "who": rng.choice(("ops-alice", "dash", "\u202eevil")),
            "note": rng.choice((None, "", "looked at it", self.text(odd=True))),
            "assignee": rng.choice((None, "bob")),
            "requested_at": self.instant(),
            "at": self.instant(),
        }
        return owner, value
