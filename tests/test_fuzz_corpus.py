"""The fuzzing's regression corpus, replayed: every input that once found a bug.

Each `tests/fuzz_corpus/*.json` is a case `bench/fuzz` made (or its shape, by
hand), with what it found. An ingest case is a record as consumed (base64 key and
value, the writer schemas its ids name) and the one outcome it must have; a `line`
case is a `pssync produce` line, sent or rejected with a message naming the field.
"""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any

import pytest

from bench.fuzz.runner import Runner
from bench.fuzz.wire import FuzzRegistry, make_decoder
from pssync.connectors.jsonl import Forms, LineError, parse_line
from pssync.streams.decode import Inbound

CORPUS = Path(__file__).parent / "fuzz_corpus"
CASES = sorted(CORPUS.glob("*.json"))


def load(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text()))


def raw(text: str | None) -> bytes | None:
    return None if text is None else base64.b64decode(text)


def test_the_corpus_holds_ingest_and_produce_cases() -> None:
    kinds = {load(p)["kind"] for p in CASES}
    assert "line" in kinds
    assert len(kinds) >= 4
    assert all(load(p)["found"] for p in CASES)


@pytest.mark.parametrize(
    "path", [p for p in CASES if load(p)["kind"] != "line"], ids=lambda p: p.stem
)
def test_an_ingest_case_ends_as_its_one_outcome_and_routes(path: Path, tmp_path: Path) -> None:
    case = load(path)
    registry = FuzzRegistry()
    decoder = make_decoder(registry)
    for schema_id, text in case["writers"].items():
        registry.preload(int(schema_id), text)
    record = Inbound(case["topic"], 0, 1, raw(case["key"]), raw(case["value"]))

    decoded = asyncio.run(decoder.decode([record]))

    outcomes = [
        *(["change"] * len(decoded.changes)),
        *(["dead"] * len(decoded.dead)),
        *(["tombstone"] * decoded.tombstones),
    ]
    assert outcomes == [case["expect"]]
    for letter in decoded.dead:
        assert letter.value is not None
        assert letter.value["stage"] in ("decode", "validate")
        assert letter.value["error_class"]
        assert letter.value["error_message"]
    # what passes is routed and processed by the keyed flows without an exception
    runner = Runner(tmp_path / "state", seed=1)
    try:
        runner.pipeline.ingest((case["topic"], 0), decoded.changes)
        runner.deliver()
        assert not runner.out.flow_failures
    finally:
        runner.close()


@pytest.mark.parametrize(
    "path", [p for p in CASES if load(p)["kind"] == "line"], ids=lambda p: p.stem
)
def test_a_produce_line_is_sent_or_rejected_naming_the_field(path: Path) -> None:
    case = load(path)
    forms = Forms()
    if case["expect"] == "rejected":
        with pytest.raises(LineError) as caught:
            parse_line(forms, 3, case["line"])
        message = str(caught.value)
        assert message.startswith("line 3: ")
        assert case["message"] in message
        assert len(message) < 300
        return
    topic, key, value, _ = parse_line(forms, 3, case["line"])
    codec = make_decoder().codec
    back = codec.decode_value(topic, codec.encode_value(topic, value))
    as_json = forms.get(topic, "value").to_json(back)
    assert as_json == forms.get(topic, "value").to_json(value)
    assert forms.get(topic, "value").from_json(as_json) == back  # consume -> produce holds
    assert codec.decode_key(topic, codec.encode_key(topic, key)) == key
