"""The control API's OpenAPI 3 document, served at ``/api/openapi.json``.

Owns: the one description of every route, parameter, body and response (the API's
tests fuzz the server against it with schemathesis, so a route that answers outside it
fails a test). Must never: describe a route the server does not have.
"""

from __future__ import annotations

from typing import Any

__all__ = ["document"]

_REF = "#/components/schemas/"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF + name}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    what = {
        400: "bad input (the message says which and how to fix it)",
        401: "no bearer token, or not a valid one",
        403: "cross-origin, or a Host that is not this API's",
        404: "no such service, route or file",
        409: "the action cannot be done in the current state",
        413: "the body is too large",
        429: "too many state-changing calls (see Retry-After)",
        502: "the gateway answered with an error of its own",
        503: "the gateway does not answer",
    }
    return {str(c): _json(_ref("Error"), what[c]) for c in codes}


_NAME = {
    "name": "name",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "minLength": 1, "maxLength": 100},
    "description": "the service's name in the manifest",
}
_SEGMENT = {
    "name": "segment",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "minLength": 1, "maxLength": 100},
    "description": "the segment's name in the manifest",
}
_WINDOW_PARAM = {
    "name": "window",
    "in": "query",
    "required": False,
    "schema": {"type": "string", "pattern": "^[1-9][0-9]{0,4}[smhd]$", "maxLength": 6},
    "description": "how far back: 15m, 6h, 7d (1 minute to 31 days)",
}
_FILTERS = [
    {
        "name": k,
        "in": "query",
        "required": False,
        "schema": {"type": "string", "maxLength": 200},
        "description": d,
    }
    for k, d in (
        ("kind", "an event kind, or a glob (serve.*)"),
        ("subject", "the component the event is about"),
        ("segment", "the segment (prod, staging)"),
    )
]
_OBJ: dict[str, Any] = {"type": "object"}
_STR_OR_NULL: dict[str, Any] = {"type": "string", "nullable": True}


def _read(summary: str, schema: str, *, params: list[Any] | None = None) -> dict[str, Any]:
    return {
        "get": {
            "summary": summary,
            "parameters": params or [],
            "responses": {"200": _json(_ref(schema), summary), **_errors(400, 403, 404)},
        }
    }


def _action(
    summary: str,
    *,
    body: dict[str, Any] | None = None,
    ok: str = "200",
    errors: tuple[int, ...] = (400, 401, 403, 404, 409, 413, 429, 502, 503),
    name: bool = True,
    params: list[Any] | None = None,
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "security": [{"bearer": []}],
        "parameters": ([_NAME] if name else []) + (params or []),
        "responses": {ok: _json(_ref("Accepted"), "accepted"), **_errors(*errors)},
    }
    if body is not None:
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": body}},
        }
    return {"post": op}


def document(url: str = "") -> dict[str, Any]:
    """The OpenAPI 3.0 document (``url``: this server's, for ``servers``)."""
    event = {
        "type": "object",
        "required": ["id", "ts", "mono_ns", "kind", "subject", "segment", "data"],
        "properties": {
            "id": {"type": "integer"},
            "ts": {"type": "number"},
            "mono_ns": {"type": "integer"},
            "kind": {"type": "string"},
            "subject": {"type": "string"},
            "segment": {"type": "string"},
            "data": _OBJ,
        },
    }
    schemas: dict[str, Any] = {
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["status", "message"],
                    "properties": {"status": {"type": "integer"}, "message": {"type": "string"}},
                }
            },
        },
        "Accepted": {
            "type": "object",
            "required": ["accepted"],
            "properties": {"accepted": {"type": "boolean"}},
        },
        "Child": {
            "type": "object",
            "nullable": True,
            "required": ["state", "pid", "restarts"],
            "properties": {
                "state": {"type": "string"},
                "pid": {"type": "integer", "nullable": True},
                "restarts": {"type": "integer"},
                "uptime_s": {"type": "number"},
                "reason": {"type": "string"},
            },
        },
        "System": {
            "type": "object",
            "required": ["system", "manifest", "state_dir", "up", "children", "counts"],
            "properties": {
                "system": {"type": "string"},
                "manifest": {"type": "string"},
                "state_dir": {"type": "string"},
                "up": {
                    "type": "object",
                    "required": ["pid", "phase", "generation"],
                    "properties": {
                        "pid": {"type": "integer"},
                        "phase": {"type": "string"},
                        "generation": {"type": "integer"},
                        "last_reload": {"type": "object", "nullable": True},
                    },
                },
                "children": {"type": "object", "additionalProperties": _ref("Child")},
                "scrub": {"type": "object", "nullable": True},
                "counts": {"type": "object", "additionalProperties": {"type": "integer"}},
            },
        },
        "Service": {
            "type": "object",
            "required": ["name", "listen", "segment", "running", "backends", "gateway"],
            "properties": {
                "name": {"type": "string"},
                "listen": {"type": "string"},
                "segment": {"type": "string"},
                "running": {"type": "boolean"},
                "child": _ref("Child"),
                "backends": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name", "kind"],
                        "properties": {
                            "name": {"type": "string"},
                            "kind": {"type": "string", "enum": ["local", "remote"]},
                        },
                    },
                },
                "gateway": {
                    "type": "object",
                    "nullable": True,
                    "description": "the gateway's own /bastion/status (docs/cli-json.md)",
                },
            },
        },
        "Services": {
            "type": "object",
            "required": ["services"],
            "properties": {"services": {"type": "array", "items": _ref("Service")}},
        },
        "Backends": {
            "type": "object",
            "required": ["backends"],
            "properties": {
                "backends": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["service", "name", "breaker", "needs_probe"],
                        "properties": {
                            "service": {"type": "string"},
                            "name": {"type": "string"},
                            "group": _STR_OR_NULL,
                            "url": {"type": "string"},
                            "tier": {"type": "integer", "nullable": True},
                            "arm": _STR_OR_NULL,
                            "kind": {"type": "string"},
                            "breaker": _STR_OR_NULL,
                            "needs_probe": {"type": "boolean"},
                            "down_reason": {"type": "string"},
                            "outstanding": {"type": "integer", "nullable": True},
                            "latency_ewma_ms": {"type": "number", "nullable": True},
                        },
                    },
                }
            },
        },
        "Jobs": {
            "type": "object",
            "required": ["jobs"],
            "properties": {
                "jobs": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["id", "kind", "status"],
                        "properties": {
                            "id": {"type": "string"},
                            "kind": {"type": "string", "enum": ["train", "drill"]},
                            "status": _OBJ,
                        },
                    },
                }
            },
        },
        "Vault": {
            "type": "object",
            "required": ["configured", "replicas", "snapshots", "scrub", "guard"],
            "properties": {
                "configured": {"type": "boolean"},
                "replicas": {"type": "array", "items": _OBJ},
                "snapshots": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name", "versions", "latest"],
                        "properties": {
                            "name": {"type": "string"},
                            "versions": {"type": "integer"},
                            "latest": {"type": "string"},
                        },
                    },
                },
                "scrub": {
                    "type": "object",
                    "required": ["recent"],
                    "properties": {
                        "schedule": {"type": "object", "nullable": True},
                        "recent": {"type": "array", "items": _ref("Event")},
                    },
                },
                "guard": {
                    "type": "object",
                    "required": ["running"],
                    "properties": {"running": {"type": "boolean"}, "child": _ref("Child")},
                },
            },
        },
        "Map": {
            "type": "object",
            "description": "the dependency map, schema bastion.map/1 (docs/map-json-schema.md)",
        },
        "Event": event,
        "EventsPage": {
            "type": "object",
            "required": ["events", "next"],
            "properties": {
                "events": {"type": "array", "items": _ref("Event")},
                "next": {
                    "type": "integer",
                    "nullable": True,
                    "description": "pass as `before` for the next (older) page; null at the end",
                },
            },
        },
        "Slos": {
            "type": "object",
            "required": ["slos"],
            "properties": {
                "slos": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["id", "service", "target", "budget_remaining", "burns"],
                        "properties": {
                            "id": {"type": "string"},
                            "service": {"type": "string"},
                            "target": {"type": "number"},
                            "window": {"type": "string"},
                            "sli": {"type": "number", "nullable": True},
                            "budget_remaining": {"type": "number", "nullable": True},
                            "nodata": {"type": "boolean"},
                            "burns": {"type": "array", "items": _OBJ},
                            "paging": {"type": "boolean"},
                        },
                    },
                }
            },
        },
        "Series": {
            "type": "object",
            "required": ["service", "window_s", "step_s", "start", "end", "backends", "marks"],
            "properties": {
                "service": {"type": "string"},
                "window_s": {"type": "integer"},
                "step_s": {"type": "integer"},
                "start": {"type": "integer"},
                "end": {"type": "integer"},
                "bounds_ms": {"type": "array", "items": {"type": "number"}},
                "backends": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name", "points"],
                        "properties": {
                            "name": {"type": "string"},
                            "points": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "required": ["t", "total", "errors", "error_rate"],
                                    "properties": {
                                        "t": {"type": "integer"},
                                        "total": {"type": "integer"},
                                        "errors": {"type": "integer"},
                                        "error_rate": {"type": "number"},
                                        "p50_ms": {"type": "number", "nullable": True},
                                        "p99_ms": {"type": "number", "nullable": True},
                                    },
                                },
                            },
                        },
                    },
                },
                "marks": {"type": "array", "items": _ref("Mark")},
            },
        },
        "Mark": {
            "type": "object",
            "required": ["t", "kind"],
            "properties": {"t": {"type": "number"}, "kind": {"type": "string"}, "data": _OBJ},
        },
        "SloSeries": {
            "type": "object",
            "required": ["window_s", "step_s", "slos"],
            "properties": {
                "window_s": {"type": "integer"},
                "step_s": {"type": "integer"},
                "slos": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["id", "service", "target", "pairs", "points"],
                        "properties": {
                            "id": {"type": "string"},
                            "service": {"type": "string"},
                            "target": {"type": "number"},
                            "pairs": {"type": "array", "items": _OBJ},
                            "points": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "required": ["t", "budget_remaining", "burns"],
                                    "properties": {
                                        "t": {"type": "integer"},
                                        "budget_remaining": {"type": "number"},
                                        "sli": {"type": "number", "nullable": True},
                                        "total": {"type": "integer"},
                                        "burns": {
                                            "type": "object",
                                            "additionalProperties": {"type": "number"},
                                        },
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
        "JobSeries": {
            "type": "object",
            "required": ["job", "progress", "marks"],
            "properties": {
                "job": {"type": "string"},
                "progress": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["t", "step", "kind"],
                        "properties": {
                            "t": {"type": "number"},
                            "step": {"type": "integer"},
                            "kind": {"type": "string"},
                        },
                    },
                },
                "marks": {"type": "array", "items": _ref("Mark")},
            },
        },
        "Segments": {
            "type": "object",
            "required": ["segments"],
            "properties": {
                "segments": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name", "quarantined"],
                        "properties": {
                            "name": {"type": "string"},
                            "quarantined": {"type": "boolean"},
                        },
                    },
                }
            },
        },
        "ReportSummary": {
            "type": "object",
            "required": ["id", "path"],
            "properties": {
                "id": {"type": "string"},
                "path": {"type": "string"},
                "generated_at": {"type": "string"},
                "score": {"type": "number", "nullable": True},
                "drills": {"type": "integer"},
                "findings": {"type": "integer"},
                "verified": {"type": "string"},
                "error": {"type": "string"},
                "document": {"type": "object", "nullable": True},
            },
        },
        "Reports": {
            "type": "object",
            "required": ["reports"],
            "properties": {"reports": {"type": "array", "items": _ref("ReportSummary")}},
        },
        "Drills": {
            "type": "object",
            "required": ["drills"],
            "properties": {
                "drills": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["id", "experiment", "state"],
                        "properties": {
                            "id": {"type": "string"},
                            "experiment": {"type": "string"},
                            "state": {"type": "string", "enum": ["running", "passed", "failed"]},
                            "code": {"type": "integer", "nullable": True},
                            "result": {"type": "object", "nullable": True},
                        },
                    },
                }
            },
        },
    }
    page_params = [
        *_FILTERS,
        {
            "name": "limit",
            "in": "query",
            "required": False,
            "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
        },
        {
            "name": "before",
            "in": "query",
            "required": False,
            "schema": {"type": "integer", "minimum": 0, "maximum": 2**62},
            "description": "the `next` of the previous page",
        },
    ]
    paths: dict[str, Any] = {
        "/api/openapi.json": {
            "get": {
                "summary": "this document",
                "responses": {"200": _json(_OBJ, "the OpenAPI document"), **_errors(403)},
            }
        },
        "/api/system": _read("the control process, its children and the scrub schedule", "System"),
        "/api/services": _read("every service: its gateway's state and backends", "Services"),
        "/api/services/{name}": _read("one service", "Service", params=[_NAME]),
        "/api/backends": _read(
            "every backend of every gateway: breaker, load, latency", "Backends"
        ),
        "/api/jobs": _read("training jobs and jobs started from the API (drills)", "Jobs"),
        "/api/vault": _read("vault replicas, snapshots, scrub progress, the guard", "Vault"),
        "/api/map": _read("the dependency map (bastion.map/1)", "Map"),
        "/api/events": _read(
            "a page of the event log, newest first, filtered", "EventsPage", params=page_params
        ),
        "/api/events/stream": {
            "get": {
                "summary": "new events as they are written (server-sent events)",
                "description": "`once=1` sends what is there and ends (for scripts and tests)",
                "parameters": [
                    *_FILTERS,
                    {
                        "name": "after",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "integer", "minimum": 0, "maximum": 2**62},
                    },
                    {
                        "name": "once",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string", "enum": ["1"]},
                        "description": "end after what is there (scripts, tests)",
                    },
                ],
                "responses": {
                    "200": {
                        "description": "an SSE stream: id, event (the kind), data (the event)",
                        "content": {"text/event-stream": {"schema": {"type": "string"}}},
                    },
                    **_errors(400, 403),
                },
            }
        },
        "/api/slos": _read("every SLO: SLI, budget left, burn rates", "Slos"),
        "/api/drills": {
            **_read("drills started from the API, with their results", "Drills"),
            **_action(
                "start a drill (a Chaos Toolkit experiment under the manifest's directory)",
                body={
                    "type": "object",
                    "required": ["experiment"],
                    "properties": {
                        "experiment": {"type": "string", "minLength": 1, "maxLength": 500}
                    },
                },
                ok="202",
                errors=(400, 401, 403, 404, 413, 429),
                name=False,
            ),
        },
        "/api/services/{name}/series": _read(
            "a service's latency and errors per backend over a window, with its rollouts and "
            "ejections as marks",
            "Series",
            params=[_NAME, _WINDOW_PARAM],
        ),
        "/api/slos/series": _read(
            "every SLO's budget left and burn rates over a window",
            "SloSeries",
            params=[_WINDOW_PARAM],
        ),
        "/api/jobs/{name}/series": _read(
            "a training job's steps over time, restarts and failures",
            "JobSeries",
            params=[{**_NAME, "description": "the training job's name in the manifest"}],
        ),
        "/api/segments": _read("every segment and whether it is quarantined", "Segments"),
        "/api/segments/{segment}/quarantine": _action(
            "quarantine a segment: revoke its tokens, take its backends out, freeze its "
            "directories, stop its jobs (docs/segments.md)",
            body={
                "type": "object",
                "properties": {"stop_jobs": {"type": "boolean"}},
                "additionalProperties": False,
            },
            errors=(400, 401, 403, 404, 409, 413, 429),
            name=False,
            params=[_SEGMENT],
        ),
        "/api/segments/{segment}/release": _action(
            "release a quarantined segment after its check (force: without it)",
            body={
                "type": "object",
                "properties": {"force": {"type": "boolean"}},
                "additionalProperties": False,
            },
            errors=(400, 401, 403, 404, 409, 413, 429),
            name=False,
            params=[_SEGMENT],
        ),
        "/api/reports": {
            **_read("the readiness reports written, newest first", "Reports"),
            **_action(
                "write and sign a readiness report into <state_dir>/reports/<time>/",
                ok="201",
                errors=(400, 401, 403, 409, 413, 429),
                name=False,
            ),
        },
        "/api/reports/{id}": _read(
            "one readiness report: its summary, signature check and report.json",
            "ReportSummary",
            params=[
                {
                    "name": "id",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string", "minLength": 1, "maxLength": 100},
                    "description": "the report's id (GET /api/reports)",
                }
            ],
        ),
        "/api/services/{name}/restart": _action(
            "restart a service's gateway process", ok="202", errors=(400, 401, 403, 404, 409, 429)
        ),
        "/api/services/{name}/scale": _action(
            "new replica bounds for a local backend (until the next reload)",
            body={
                "type": "object",
                "required": ["backend", "min", "max"],
                "properties": {
                    "backend": {"type": "string"},
                    "min": {"type": "integer", "minimum": 0, "maximum": 64},
                    "max": {"type": "integer", "minimum": 0, "maximum": 64},
                },
            },
        ),
        "/api/services/{name}/rollout": _action(
            "start a rollout of a candidate model (docs/rollout.md)",
            body={
                "type": "object",
                "required": ["candidate"],
                "properties": {
                    "candidate": {"type": "string"},
                    "strategy": {"type": "string"},
                    "backend": {"type": "string"},
                },
            },
        ),
        "/api/services/{name}/rollout/promote": _action("promote the rollout's candidate now"),
        "/api/services/{name}/rollout/rollback": _action("roll the rollout back to stable"),
    }
    doc: dict[str, Any] = {
        "openapi": "3.0.3",
        "info": {
            "title": "Bastion control API",
            "version": "1",
            "description": "Served by `bastion up` (docs/control-plane.md). Reads need no "
            "token; every POST needs `Authorization: Bearer <token>` (`bastion token`), "
            "must come from the API's own origin, and is rate-limited.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
    if url:
        doc["servers"] = [{"url": url}]
    return doc
