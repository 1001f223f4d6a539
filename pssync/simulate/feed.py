"""From source changes to the JSON lines `pssync produce` reads, in source-time order.

`ChangeLog` plays the four source databases' write-ahead logs: each change gets
a commit time on the simulated clock (`ts_ms`, increasing) and a log position
(`lsn`, increasing per database), and becomes the Debezium PostgreSQL envelope
in the contract's JSON form. Changes are sent in `Group`s: the changes of one
business event (a hire: ERP employee, then HR worker), which `--count` never
cuts, so a prefix of the stream is as consistent as the whole.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from pssync.avro.contract import TABLES_BY_TOPIC
from pssync.simulate.truth import Fault, iso

Record = dict[str, Any]

DEBEZIUM_VERSION: Final = "2.7.3.Final"
# where each database's log starts, so positions look like Postgres LSNs
LSN_BASE: Final[dict[str, int]] = {
    "hr": 0x16B3_4F20,
    "erp": 0x2F10_0A88,
    "crm": 0x0C41_77D0,
    "psa": 0x3A02_1C40,
}
TX_BASE: Final[dict[str, int]] = {"hr": 7_000, "erp": 91_000, "crm": 15_000, "psa": 230_000}
# the entity type each topic's key names, for truth records about a change
ENTITY_OF_TOPIC: Final[dict[str, str]] = {
    "cdc.hr.worker": "worker",
    "cdc.erp.employee": "erp_employee",
    "cdc.erp.cost_rate": "cost_rate",
    "cdc.erp.cost_center": "cost_center",
    "cdc.erp.customer": "customer",
    "cdc.erp.project": "erp_project",
    "cdc.erp.period": "period",
    "cdc.crm.sow": "sow",
    "cdc.psa.project": "project",
    "cdc.psa.assignment": "assignment",
    "cdc.psa.time_entry": "time_entry",
}


def shaped(topic: str, values: Mapping[str, Any]) -> Record:
    """A row of `topic` with exactly the contract's fields, in the contract's order."""
    names = [name for name, _ in TABLES_BY_TOPIC[topic].fields]
    extra = set(values) - set(names)
    missing = [n for n in names if n not in values and n != "updated_at"]
    if extra or missing:
        raise ValueError(f"{topic}: unknown {sorted(extra)}, missing {missing}")
    return {name: values.get(name) for name in names}


@dataclass(frozen=True, slots=True)
class Line:
    """One change as a `pssync produce` line, with the facts the stream needs."""

    text: str
    topic: str
    key: str
    db: str
    lsn: int
    ts_ms: int


@dataclass(frozen=True, slots=True)
class Raw:
    """Bytes no schema decodes, for a CDC topic: sent with a plain producer, not produce."""

    topic: str
    key: Record
    value: bytes
    correlation_id: str

    def to_json(self) -> Record:
        return {
            "topic": self.topic,
            "key": self.key,
            "value_hex": self.value.hex(),
            "headers": {"correlation_id": self.correlation_id},
        }


Item = Line | Raw


@dataclass(slots=True)
class Group:
    """The changes of one business event, sent together, and what they should lead to."""

    label: str
    at_ms: int
    lines: list[Line] = field(default_factory=list)
    after: list[Item] = field(default_factory=list)  # redeliveries and garbage, sent last
    faults: list[Fault] = field(default_factory=list)
    posts: int = 0  # approved time entries the worker should post
    approved: int = 0

    @property
    def items(self) -> list[Item]:
        return [*self.lines, *self.after]

    def send_first(self, db: str) -> None:
        """Transport reordering: `db`'s changes arrive before the others (order kept per db)."""
        self.lines.sort(key=lambda line: line.db != db)


class ChangeLog:
    """The source databases' logs: commit times, positions, before-images, envelopes."""

    def __init__(self, seed: int, start_ms: int) -> None:
        self.rng = random.Random(f"{seed}:log")
        self.seed = seed
        self.now_ms = start_ms
        self.lsn = dict(LSN_BASE)
        self.tx = dict(TX_BASE)
        self.images: dict[tuple[str, str], Record] = {}
        self.seq = 0
        self._tx_of_group: dict[str, int] = {}

    def begin(self, label: str, at_ms: int) -> Group:
        self.now_ms = max(self.now_ms + 1, at_ms)
        self._tx_of_group = {}
        return Group(label, self.now_ms)

    def image(self, topic: str, key: str) -> Record | None:
        return self.images.get((topic, key))

    def put(self, group: Group, topic: str, row: Mapping[str, Any], snapshot: bool = False) -> Line:
        """Commit `row` (an insert or an update of its key) and add the change to `group`."""
        table = TABLES_BY_TOPIC[topic]
        db = table.platform
        self.now_ms += self.rng.randint(15, 350)
        after = shaped(topic, row)
        if "updated_at" in after:
            after["updated_at"] = iso(self.now_ms)
        key = str(after[table.key[0]])
        before = self.images.get((topic, key))
        self.images[(topic, key)] = after
        op = "r" if snapshot else ("c" if before is None else "u")
        self.lsn[db] += self.rng.randint(56, 4096)
        if db not in self._tx_of_group:
            self.tx[db] += self.rng.randint(1, 9)
            self._tx_of_group[db] = self.tx[db]
        self.seq += 1
        source = {
            "version": DEBEZIUM_VERSION,
            "connector": "postgresql",
            "name": db,
            "ts_ms": self.now_ms,
            "snapshot": "true" if snapshot else "false",
            "db": f"{db}db",
            "schema": db,
            "table": table.name,
            "txId": self._tx_of_group[db],
            "lsn": self.lsn[db],
        }
        value = {
            "before": None if snapshot else before,
            "after": after,
            "op": op,
            "ts_ms": self.now_ms + self.rng.randint(3, 60),
            "source": source,
        }
        line = {
            "topic": topic,
            "key": {table.key[0]: key},
            "value": value,
            "headers": {"correlation_id": f"sim-{self.seed}-{self.seq:08d}"},
        }
        out = Line(_dumps(line), topic, key, db, self.lsn[db], self.now_ms)
        group.lines.append(out)
        return out

    def correlation(self) -> str:
        self.seq += 1
        return f"sim-{self.seed}-{self.seq:08d}"


def mark_snapshot_ends(group: Group) -> None:
    """Debezium marks each database's last snapshot record `snapshot: "last"`."""
    last = {line.db: i for i, line in enumerate(group.lines)}
    for i in last.values():
        line = group.lines[i]
        obj = json.loads(line.text)
        obj["value"]["source"]["snapshot"] = "last"
        group.lines[i] = Line(_dumps(obj), line.topic, line.key, line.db, line.lsn, line.ts_ms)


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def limit_count(groups: Iterable[Group], count: int | None) -> Iterator[Group]:
    """Groups until `count` changes are reached: the group holding the Nth is sent whole."""
    sent = 0
    for group in groups:
        if count is not None and sent >= count:
            return
        yield group
        sent += len(group.items)
