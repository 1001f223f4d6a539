"""The operations API against its own OpenAPI document, on a real worker with tokens.

Schemathesis generates requests from `/api/openapi.json` (valid and invalid ones, a
bounded number per operation: CI-sized) and checks every answer: no 5xx, the status
and body as documented, invalid input refused, valid input accepted, the token
required. Real records (a small firm is fed first) are checked against the document
too, through explicit cases with real exception and entity IDs.
"""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from pssync.api.auth import hash_token
from pssync.avro.contract import CDC_TOPICS
from pssync.settings import Settings
from tests import scenarios
from tests.conftest import Stack, WorkerHandle, free_port, launch_worker
from tests.kafka_helpers import create_topics, produce_cli, wait_drained

pytestmark = pytest.mark.kafka

TOKEN = "schemathesis-token-9c2e"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
EXAMPLES = 50  # per operation and generation mode: well under a minute for the whole run


@pytest.fixture(scope="module")
def api_worker(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerHandle]:
    import uuid

    tmp: Path = tmp_path_factory.mktemp("schemathesis")
    tag = uuid.uuid4().hex[:10]
    port = free_port()
    settings_ = Settings(
        kafka_bootstrap=stack.bootstrap,
        schema_registry_url=stack.registry_url,
        topic_prefix=f"t{tag}.",
        app_id=f"pssync-test-{tag}",
        data_dir=tmp / "state",
        batch_within_s=0.02,
        tick_interval_s=0.5,
        web_port=port,
        web_host="127.0.0.1",
        advertised_url=f"http://127.0.0.1:{port}",
        api_tokens=f"fuzz:read+act:{hash_token(TOKEN)}",
        api_rate_per_s=10_000,
        api_burst=10_000,
    )
    create_topics(settings_)
    worker = launch_worker(settings_, tmp / "worker.log")
    try:
        for phase in (scenarios.reference_and_erp(), scenarios.psa_and_hr()):
            produce_cli(settings_, phase, tmp)
            topics = [settings_.topic(t) for t in CDC_TOPICS]
            internal = [settings_.internal_topic(t) for t in ("worker-keyed", "project-keyed")]
            wait_drained(settings_, topics + internal)
        deadline = time.monotonic() + 60
        while len(exception_ids(worker)) < len(scenarios.EXPECTED_EXCEPTIONS):
            assert time.monotonic() < deadline, "the queue view did not fill"
            time.sleep(0.5)
        yield worker
    finally:
        worker.stop()


def exception_ids(worker: WorkerHandle) -> list[str]:
    import json

    request = urllib.request.Request(worker.url + "/api/exceptions?limit=500", headers=AUTH)
    with urllib.request.urlopen(request, timeout=10) as resp:
        return [r["exception_id"] for r in json.loads(resp.read())["items"]]


@pytest.fixture(scope="module")
def api_schema(api_worker: WorkerHandle) -> Any:
    schema = schemathesis.openapi.from_url(api_worker.url + "/api/openapi.json", headers=AUTH)
    schema.config.update(base_url=api_worker.url)
    # the token is sent with every call; generating (and mutating) it is not the point
    schema.config.generation.update(max_examples=EXAMPLES, with_security_parameters=False)
    return schema


def test_api_conforms_to_its_document(api_schema: Any) -> None:
    """Every operation, valid and invalid requests, `EXAMPLES` of each (hypothesis
    directly: schemathesis' pytest plugin does not run under this pytest)."""
    failures = []
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) == 6
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                suppress_health_check=list(HealthCheck),
                derandomize=True,
                database=None,
                phases=[Phase.explicit, Phase.generate],
            )
            def check(case: Any) -> None:
                case.call_and_validate(headers=AUTH)

            try:
                check()
            except Unsatisfiable:
                # nothing in this operation can be invalid (no parameter, or only free text)
                assert mode is GenerationMode.NEGATIVE, operation.label
            except Exception as exc:
                failures.append(f"{operation.label} ({mode.value}): {exc}")
    assert not failures, "\n\n".join(failures)


def test_real_records_conform(api_schema: Any, api_worker: WorkerHandle) -> None:
    """The generated requests rarely name a real exception or entity: these do."""
    detail = api_schema["/api/exceptions/{exception_id}"]["GET"]
    act = api_schema["/api/exceptions/{exception_id}/actions"]["POST"]
    entity = api_schema["/api/entities/{entity_type}/{entity_id}"]["GET"]
    ids = exception_ids(api_worker)
    for exception_id in ids:
        response = detail.Case(path_parameters={"exception_id": exception_id}).call_and_validate(
            headers=AUTH
        )
        assert response.status_code == 200
    response = act.Case(
        path_parameters={"exception_id": ids[0]}, body={"action": "assign", "assignee": "bob"}
    ).call_and_validate(headers=AUTH)
    assert response.status_code == 202
    for entity_type, entity_id in [
        ("worker", "W1"),
        ("project", "P4"),
        ("assignment", "A1"),
        ("time_entry", "T3"),
    ]:
        case = entity.Case(path_parameters={"entity_type": entity_type, "entity_id": entity_id})
        assert case.call_and_validate(headers=AUTH).status_code == 200, (entity_type, entity_id)
    validate = api_schema["/api/validate/project"]["POST"]
    case = validate.Case(
        body={"crm_account_id": "ACC1", "legal_entity": "LE1", "currency": "USD", "sow_id": "S1"}
    )
    assert case.call_and_validate(headers=AUTH).status_code == 200
