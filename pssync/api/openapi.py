"""The OpenAPI 3 document of the operations API, served at `/api/openapi.json`.

Written to match the handlers exactly (`api.routes`, `api.service`): every status a
route can answer is listed with its body, and request schemas accept what the
handlers accept, no more and no less, so a schema-driven test
(tests/test_api_schemathesis.py) can hold the server to it.
"""

from __future__ import annotations

from typing import Any

from pssync.api.queue import AGE_NAMES, CURSOR_PATTERN, STATES
from pssync.api.service import (
    ACTION_ID_PATTERN,
    ENTITY_TYPES,
    FILTER_MAX,
    LIMIT_DEFAULT,
    LIMIT_MAX,
    NOTE_MAX,
)
from pssync.avro.contract import ACTIONS

Schema = dict[str, Any]

VERSION = "1.0.0"


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: Schema) -> Schema:
    return {**schema, "nullable": True}


_STRING: Schema = {"type": "string"}
_INSTANT: Schema = {"type": "string", "format": "date-time"}
_COUNTS: Schema = {"type": "object", "additionalProperties": {"type": "integer", "minimum": 0}}

SOURCE_REF: Schema = {
    "type": "object",
    "required": ["topic", "partition", "offset", "key"],
    "properties": {
        "topic": _STRING,
        "partition": {"type": "integer"},
        "offset": {"type": "integer"},
        "key": _STRING,
        "lsn": _nullable({"type": "integer"}),
        "ts_ms": _nullable({"type": "integer"}),
    },
}

RESOLUTION: Schema = _nullable(
    {
        "type": "object",
        "required": ["who", "action", "when"],
        "properties": {
            "who": _STRING,
            "action": _STRING,
            "note": _nullable(_STRING),
            "when": _INSTANT,
        },
    }
)

EXCEPTION: Schema = {
    "type": "object",
    "description": "An exception as on sync.exceptions (its latest version), JSON form.",
    "required": [
        "exception_id",
        "rule",
        "state",
        "entity_type",
        "entity_id",
        "reason",
        "context",
        "remediation",
        "created_at",
        "correlation_id",
        "causation",
    ],
    "properties": {
        "exception_id": _STRING,
        "rule": _STRING,
        "state": {"type": "string", "enum": list(STATES)},
        "entity_type": _STRING,
        "entity_id": _STRING,
        "reason": _STRING,
        "context": {"type": "object", "additionalProperties": _nullable(_STRING)},
        "remediation": _STRING,
        "created_at": _INSTANT,
        "resolution": RESOLUTION,
        "correlation_id": _STRING,
        "causation": {"type": "array", "items": _ref("SourceRef")},
        "owner": _nullable(_STRING),
        "assignee": _nullable(_STRING),
    },
}

HISTORY_ENTRY: Schema = {
    "type": "object",
    "description": "A version of the exception (kind state) or an action's outcome (kind action).",
    "required": ["kind", "at", "correlation_id", "recorded_at"],
    "properties": {
        "kind": {"type": "string", "enum": ["state", "action"]},
        "at": _nullable(_INSTANT),
        "recorded_at": _INSTANT,
        "correlation_id": _nullable(_STRING),
        "state": _nullable(_STRING),
        "resolution": RESOLUTION,
        "assignee": _nullable(_STRING),
        "action_id": _STRING,
        "action": _nullable(_STRING),
        "outcome": _nullable(_STRING),
        "detail": _nullable(_STRING),
        "who": _nullable(_STRING),
        "note": _nullable(_STRING),
    },
}

EXCEPTION_DETAIL: Schema = {
    "allOf": [
        _ref("Exception"),
        {
            "type": "object",
            "required": ["history", "trail", "age"],
            "properties": {
                "age": {"type": "string", "enum": list(AGE_NAMES)},
                "history": {"type": "array", "items": _ref("HistoryEntry")},
                "trail": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["correlation_id", "causation"],
                        "properties": {
                            "correlation_id": _STRING,
                            "causation": {"type": "array", "items": _ref("SourceRef")},
                        },
                    },
                },
            },
        },
    ]
}

_NOTE: Schema = _nullable({"type": "string", "maxLength": NOTE_MAX})
_ACTION_ID: Schema = _nullable(
    {
        "type": "string",
        "pattern": ACTION_ID_PATTERN,
        "description": "the client's id for this action: a retry with the same id "
        "records nothing new",
    }
)
ACTION_REQUEST: Schema = {
    "oneOf": [
        {
            "type": "object",
            "additionalProperties": False,
            "required": ["action"],
            "properties": {
                "action": {"type": "string", "enum": [a for a in ACTIONS if a != "assign"]},
                "note": _NOTE,
                "action_id": _ACTION_ID,
            },
        },
        {
            "type": "object",
            "additionalProperties": False,
            "required": ["action"],
            "properties": {
                "action": {"type": "string", "enum": ["assign"]},
                "assignee": _nullable(
                    {
                        "type": "string",
                        "maxLength": FILTER_MAX,
                        "description": "who works on it (null or absent: nobody)",
                    }
                ),
                "note": _NOTE,
                "action_id": _ACTION_ID,
            },
        },
    ]
}

_FIELD: Schema = {"type": "string", "minLength": 1, "maxLength": FILTER_MAX}
VALIDATE_REQUEST: Schema = {
    "type": "object",
    "additionalProperties": False,
    "required": ["crm_account_id", "legal_entity", "currency"],
    "properties": {
        "crm_account_id": _FIELD,
        "legal_entity": _FIELD,
        "currency": _FIELD,
        "sow_id": _nullable({"type": "string", "maxLength": FILTER_MAX}),
    },
}

VALIDATE_RESULT: Schema = {
    "type": "object",
    "required": ["passed", "checks"],
    "properties": {
        "passed": {"type": "boolean"},
        "checks": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["check", "passed"],
                "properties": {
                    "check": _STRING,
                    "passed": {"type": "boolean"},
                    "facts": {},
                },
            },
        },
    },
}

ENTITY: Schema = {
    "type": "object",
    "required": ["golden", "open_findings", "recent_commands"],
    "properties": {
        "golden": _nullable({"type": "object"}),
        "open_findings": {"type": "array", "items": {"type": "object"}},
        "recent_commands": {"type": "array", "items": {"type": "object"}},
    },
}

SUMMARY: Schema = {
    "type": "object",
    "required": ["stream_time", "open_exceptions", "open_alerts", "view"],
    "properties": {
        "stream_time": _nullable(_INSTANT),
        "open_exceptions": {
            "type": "object",
            "required": ["total", "by_rule"],
            "description": "open exceptions: by rule, by age bucket on the firm's stream time",
            "properties": {
                "total": {"type": "integer", "minimum": 0},
                "by_rule": {"type": "object", "additionalProperties": _COUNTS},
            },
        },
        "open_alerts": {
            "type": "object",
            "required": ["total", "by_rule"],
            "description": "open drift alerts: by rule, by severity",
            "properties": {
                "total": {"type": "integer", "minimum": 0},
                "by_rule": {"type": "object", "additionalProperties": _COUNTS},
            },
        },
        "view": {
            "type": "object",
            "required": ["ready", "exceptions"],
            "properties": {
                "ready": {"type": "boolean"},
                "exceptions": {"type": "integer", "minimum": 0},
            },
        },
    },
}

ERROR: Schema = {
    "type": "object",
    "required": ["error", "message"],
    "properties": {"error": _STRING, "message": _STRING},
}

_MEANINGS = {
    "400": "a query parameter is not valid; or the request line or a header exceeds 8190 "
    "bytes, which the HTTP server refuses in plain text before the API sees the request",
    "401": "no token, an unknown one, or no token configured on the server",
    "403": "the token lacks the scope",
    "404": "not known",
    "409": "the action does not apply to the exception as it stands",
    "413": "the body is too large",
    "422": "the body is not valid",
    "429": "too many requests for this token; see Retry-After",
    "503": "the worker owning the data is not reachable or not known yet; retry",
}


def _errors(*codes: str) -> dict[str, Schema]:
    """Error responses (JSON); 400 on every operation, also in aiohttp's plain text."""
    out: dict[str, Schema] = {}
    for code in ("400", *codes):
        content: Schema = {"application/json": {"schema": _ref("Error")}}
        if code == "400":
            content["text/plain"] = {"schema": _STRING}
        out[code] = {"description": _MEANINGS[code], "content": content}
    return out


def _ok(schema: Schema, description: str, status: str = "200") -> dict[str, Schema]:
    return {
        status: {
            "description": description,
            "headers": {
                "X-Pssync-Served-By": {
                    "description": "the worker that computed the answer",
                    "schema": _STRING,
                }
            },
            "content": {"application/json": {"schema": schema}},
        }
    }


def _json_body(schema: Schema) -> Schema:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _query(name: str, schema: Schema, description: str) -> Schema:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


def _path(name: str, schema: Schema | None = None) -> Schema:
    return {"name": name, "in": "path", "required": True, "schema": schema or _STRING}


_FILTER: Schema = {"type": "string", "maxLength": FILTER_MAX}


def document() -> Schema:
    """The OpenAPI 3.0 document."""
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "pssync operations API",
            "version": VERSION,
            "description": "The exception queue, actions on it, entity lookups and the "
            "project governance gate, on every worker's HTTP port. Bearer tokens "
            "(PSSYNC_API_TOKENS) with scopes read and act.",
        },
        "security": [{"bearer": []}],
        "paths": {
            "/api/exceptions": {
                "get": {
                    "operationId": "listExceptions",
                    "summary": "The exception queue, oldest first (created_at, exception_id)",
                    "parameters": [
                        _query(
                            "state", {"type": "string", "enum": ["", *STATES]}, "state (empty: any)"
                        ),
                        _query("rule", _FILTER, "rule ID (empty: any)"),
                        _query("entity_type", _FILTER, "entity type (empty: any)"),
                        _query("entity_id", _FILTER, "entity ID (empty: any)"),
                        _query("assignee", _FILTER, "assignee (empty: any)"),
                        _query(
                            "age",
                            {"type": "string", "enum": ["", *AGE_NAMES]},
                            "age bucket, on the firm's stream time (empty: any)",
                        ),
                        _query(
                            "min_age_s",
                            {"type": "number", "minimum": 0, "maximum": 10**10},
                            "at least this many seconds old, on the firm's stream time",
                        ),
                        _query(
                            "limit",
                            {
                                "type": "integer",
                                "minimum": 1,
                                "maximum": LIMIT_MAX,
                                "default": LIMIT_DEFAULT,
                            },
                            "page size",
                        ),
                        _query(
                            "cursor",
                            {"type": "string", "pattern": CURSOR_PATTERN},
                            "the previous page's next (opaque; empty: the first page)",
                        ),
                    ],
                    "responses": {
                        **_ok(_ref("ExceptionPage"), "a page of exceptions"),
                        **_errors("401", "403", "429"),
                    },
                }
            },
            "/api/exceptions/{exception_id}": {
                "get": {
                    "operationId": "getException",
                    "summary": "An exception with its history and trail",
                    "parameters": [_path("exception_id")],
                    "responses": {
                        **_ok(_ref("ExceptionDetail"), "the exception"),
                        **_errors("401", "403", "404", "429"),
                    },
                }
            },
            "/api/exceptions/{exception_id}/actions": {
                "post": {
                    "operationId": "actOnException",
                    "summary": "Record an action (scope act); 202 once it is durably recorded",
                    "parameters": [_path("exception_id")],
                    "requestBody": _json_body(_ref("ActionRequest")),
                    "responses": {
                        **_ok(
                            {
                                "type": "object",
                                "required": ["action_id"],
                                "properties": {"action_id": _STRING},
                            },
                            "recorded on ops.actions",
                            "202",
                        ),
                        **_errors("401", "403", "404", "409", "413", "422", "429", "503"),
                    },
                }
            },
            "/api/entities/{entity_type}/{entity_id}": {
                "get": {
                    "operationId": "getEntity",
                    "summary": "An entity's golden record, open findings and recent commands",
                    "parameters": [
                        _path("entity_type", {"type": "string", "enum": list(ENTITY_TYPES)}),
                        _path("entity_id"),
                    ],
                    "responses": {
                        **_ok(_ref("Entity"), "the entity, from the worker owning it"),
                        **_errors("401", "403", "404", "429", "503"),
                    },
                }
            },
            "/api/validate/project": {
                "post": {
                    "operationId": "validateProject",
                    "summary": "The governance gate's checks for a would-be project",
                    "requestBody": _json_body(_ref("ValidateRequest")),
                    "responses": {
                        **_ok(_ref("ValidateResult"), "each check and whether it passed"),
                        **_errors("401", "403", "413", "422", "429", "503"),
                    },
                }
            },
            "/api/summary": {
                "get": {
                    "operationId": "summary",
                    "summary": "Open exceptions by rule and age, open alerts by rule and severity",
                    "responses": {
                        **_ok(_ref("Summary"), "the summary"),
                        **_errors("401", "403", "429"),
                    },
                }
            },
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "SourceRef": SOURCE_REF,
                "Exception": EXCEPTION,
                "HistoryEntry": HISTORY_ENTRY,
                "ExceptionDetail": EXCEPTION_DETAIL,
                "ExceptionPage": {
                    "type": "object",
                    "required": ["items", "next"],
                    "properties": {
                        "items": {"type": "array", "items": _ref("Exception")},
                        "next": _nullable({"type": "string", "pattern": CURSOR_PATTERN}),
                    },
                },
                "ActionRequest": ACTION_REQUEST,
                "ValidateRequest": VALIDATE_REQUEST,
                "ValidateResult": VALIDATE_RESULT,
                "Entity": ENTITY,
                "Summary": SUMMARY,
                "Error": ERROR,
            },
        },
    }
