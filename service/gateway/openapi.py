"""The HTTP API described as OpenAPI 3.1, served at ``GET /openapi.json``.

Written by hand beside the route table rather than derived from it: the routes are plain
Starlette functions that parse their own bodies, so nothing could infer the fields. A test keeps
the two in step (every route is described, nothing else is), and a property-based test fuzzes
the gateway from this very document, so a field described wrongly shows up as a failure there.
Answer bodies list the fields a client may rely on and allow more, so a field added later is
not a break.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from service import __version__
from service.domain import ON_EXPIRY
from service.gateway.auth import SESSION_COOKIE
from service.gateway.routes import LISTING_LIMIT_MAX, gateway
from service.status import REQUEST_STATES

_API = [{"bearer": []}, {"session": []}]
_OPEN: list[dict[str, list[str]]] = []
_ID = {
    "name": "request_id",
    "in": "path",
    "required": True,
    "description": "A request's id, as `POST /requests` returned it.",
    "schema": {"type": "string"},
}
_TOKEN = {
    "name": "token",
    "in": "path",
    "required": True,
    "description": "The signed token of a decision link, as the request email carries it.",
    "schema": {"type": "string"},
}


def _json(schema: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}}


def _answer(description: str, schema: str | None = None, **headers: str) -> dict[str, Any]:
    answer: dict[str, Any] = {"description": description}
    if schema is not None:
        answer["content"] = _json(schema)
    if headers:
        answer["headers"] = {
            name: {"description": text, "schema": {"type": "string"}}
            for name, text in headers.items()
        }
    return answer


def _error(description: str) -> dict[str, Any]:
    return _answer(description, "Error")


def _page(description: str) -> dict[str, Any]:
    """An HTML page; its errors answer JSON when the client asks for it."""
    return {
        "description": description,
        "content": {
            "text/html": {"schema": {"type": "string"}},
            "application/json": {"schema": {"$ref": "#/components/schemas/Error"}},
        },
    }


_REDIRECT = _answer("Redirect (to `/login` without a session)", Location="Where to go next.")
#: What any call may answer, whatever it is.
_ALWAYS = {
    "413": _error("The body is larger than MAILGATE_HTTP_MAX_BYTES"),
    "429": {
        **_error("Too many failed attempts from this address; wait and try again"),
        "headers": {
            "Retry-After": {
                "description": "Seconds to wait before the next attempt.",
                "schema": {"type": "integer", "minimum": 1},
            }
        },
    },
}
_UNAUTHORIZED = {"401": _error("No valid API token or session")}
_ENGINE_DOWN = {"503": _error("The engine cannot be reached")}


def _operation(
    summary: str,
    responses: dict[str, Any],
    *,
    security: list[dict[str, list[str]]] = _API,
    parameters: list[dict[str, Any]] | None = None,
    body: dict[str, Any] | None = None,
    body_required: bool = True,
) -> dict[str, Any]:
    answers = {**responses, **_ALWAYS}
    if security is _API:
        answers.update(_UNAUTHORIZED)
    operation: dict[str, Any] = {"summary": summary, "security": security, "responses": answers}
    if parameters:
        operation["parameters"] = parameters
    if body is not None:
        operation["requestBody"] = {"required": body_required, "content": body}
    return operation


def _query(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "description": description, "schema": schema}


SCHEMAS: dict[str, Any] = {
    "Health": {"type": "object", "required": ["ok"], "properties": {"ok": {"const": True}}},
    "Ready": {
        "type": "object",
        "required": ["ready"],
        "properties": {"ready": {"type": "boolean"}, "engine": {"type": "string"}},
    },
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {"error": {"type": ["string", "null"]}},
    },
    "Submission": {
        "type": "object",
        "required": ["url"],
        "description": "Give `email` (one approver) or `approvers` (several), not both.",
        "properties": {
            "url": {"type": "string", "description": "The http(s) page to summarize."},
            "email": {"type": "string", "description": "The approver's address."},
            "approvers": {
                "type": "array",
                "items": {"type": "string"},
                "description": "Several approvers, each with their own email and links.",
            },
            "policy": {
                "description": "How several approvers decide: any (the first answer), all, "
                "or {min: N} approvals.",
                "oneOf": [
                    {"type": "string", "enum": ["any", "all"]},
                    {
                        "type": "object",
                        "required": ["min"],
                        "properties": {"min": {"type": "integer", "minimum": 1}},
                    },
                ],
            },
            "escalate_to": {
                "type": "array",
                "items": {"type": "string"},
                "description": "Also offered a waiting round nobody decided.",
            },
            "escalate_after": {
                "type": ["string", "number"],
                "description": "When (default: at the first reminder).",
            },
            "callback_url": {
                "type": "string",
                "description": "Where the final status is POSTed, signed.",
            },
            "repeat": {
                "type": "boolean",
                "description": "Start the next generation once the pair's last request ended.",
            },
            "expires_in": {
                "type": ["string", "number"],
                "description": "Each round's deadline: `3d`, `90m` or seconds; default "
                "MAILGATE_DECISION_TTL.",
            },
            "on_expiry": {"type": "string", "enum": list(ON_EXPIRY)},
        },
    },
    "Submitted": {
        "type": "object",
        "required": ["id", "status_url", "created"],
        "properties": {
            "id": {"type": "string"},
            "status_url": {"type": "string"},
            "created": {"type": "boolean"},
        },
    },
    "Round": {
        "type": "object",
        "required": ["number", "summary", "summarizer", "decision"],
        "properties": {
            "number": {"type": "integer"},
            "summary": {"type": "string"},
            "summarizer": {"type": "string"},
            "model": {"type": ["string", "null"]},
            "decision": {"type": ["string", "null"]},
            "reason": {"type": ["string", "null"]},
            "by": {"type": ["string", "null"]},
            "via": {"type": ["string", "null"]},
            "decided_at": {"type": ["integer", "null"]},
            "asked_at": {"type": ["integer", "null"]},
            "round_id": {"type": ["string", "null"]},
            "deadline_at": {"type": ["integer", "null"]},
            "reminders": {"type": "integer"},
            "edited_summary": {"type": ["string", "null"]},
            "answers": {
                "type": "array",
                "description": "What everyone the round was addressed to did.",
                "items": {"type": "object"},
            },
        },
    },
    "Status": {
        "type": "object",
        "required": ["id", "state", "url", "detail", "created_at", "updated_at", "rounds"],
        "properties": {
            "id": {"type": "string"},
            "state": {"type": "string", "enum": list(REQUEST_STATES)},
            "url": {"type": "string"},
            "detail": {"type": "string"},
            "created_at": {"type": "integer"},
            "updated_at": {"type": "integer"},
            "rounds": {"type": "array", "items": {"$ref": "#/components/schemas/Round"}},
            "approvers": {"type": "array", "items": {"type": "string"}},
            "policy": {"type": "string"},
            "approved_text": {"type": ["string", "null"]},
            "edited_by": {"type": ["string", "null"]},
        },
    },
    "Listing": {
        "type": "object",
        "required": ["requests", "cursor"],
        "properties": {
            "requests": {"type": "array", "items": {"type": "object"}},
            "cursor": {"type": ["string", "null"]},
        },
    },
    "Events": {
        "type": "object",
        "required": ["id", "events", "verification"],
        "properties": {
            "id": {"type": "string"},
            "events": {"type": "array", "items": {"type": "object"}},
            "verification": {"type": "object"},
        },
    },
    "Reason": {
        "type": "object",
        "properties": {"reason": {"type": "string", "description": "Recorded with the act."}},
    },
    "Verdict": {
        "type": "object",
        "required": ["verdict"],
        "properties": {
            "verdict": {"type": "string", "enum": ["approve", "reject"]},
            "reason": {"type": "string"},
        },
    },
    "OperatorVerdict": {
        "type": "object",
        "required": ["verdict"],
        "properties": {
            "verdict": {"type": "string", "enum": ["approve", "reject"]},
            "reason": {"type": "string"},
            "by": {
                "type": "string",
                "description": "Who the caller says decided; kept as evidence.claimed_by only.",
            },
        },
    },
    "Outcome": {
        "type": "object",
        "required": ["id", "accepted"],
        "properties": {
            "id": {"type": "string"},
            "accepted": {"type": "boolean"},
            "decision": {"type": ["object", "null"]},
            "error": {"type": ["string", "null"]},
            "state": {"type": "string"},
        },
    },
    "Reassignment": {
        "type": "object",
        "required": ["from", "to"],
        "properties": {"from": {"type": "string"}, "to": {"type": "string"}},
    },
    "Delegation": {
        "type": "object",
        "required": ["to"],
        "properties": {"to": {"type": "string", "description": "Who decides instead."}},
    },
    "Cancelling": {
        "type": "object",
        "required": ["id", "cancelling"],
        "properties": {"id": {"type": "string"}, "cancelling": {"type": "boolean"}},
    },
}

_NDJSON = {"application/x-ndjson": {"schema": {"type": "string"}}}
_FORM_TOKEN = {
    "application/x-www-form-urlencoded": {
        "schema": {
            "type": "object",
            "required": ["token"],
            "properties": {"token": {"type": "string"}},
        }
    }
}

PATHS: dict[str, dict[str, Any]] = {
    "/": {
        "get": _operation(
            "The dashboard: one page of requests, open ones first",
            {"200": _page("The dashboard"), "303": _REDIRECT},
            security=[{"session": []}, {}],
            parameters=[_query("cursor", "Where the previous page ended.", {"type": "string"})],
        )
    },
    "/dashboard/{request_id}": {
        "get": _operation(
            "One request as a page: rounds, decisions, the audit timeline",
            {"200": _page("The request's page"), "303": _REDIRECT, "404": _page("Unknown")},
            security=[{"session": []}, {}],
            parameters=[_ID],
        )
    },
    "/login": {
        "get": _operation(
            "The dashboard's sign-in page",
            {"200": _page("The form"), "303": _REDIRECT},
            security=_OPEN,
        ),
        "post": _operation(
            "Sign in with an API token; sets the session cookie",
            {
                "303": _answer(
                    "Signed in",
                    Location="The dashboard.",
                    **{"Set-Cookie": "The HttpOnly, SameSite=Strict session cookie."},
                ),
                "401": _page("Wrong token"),
                "403": _page("Cross-site request refused"),
            },
            security=_OPEN,
            body=_FORM_TOKEN,
        ),
    },
    "/healthz": {
        "get": _operation("Liveness", {"200": _answer("Alive", "Health")}, security=_OPEN)
    },
    "/readyz": {
        "get": _operation(
            "Readiness: the engine answers",
            {"200": _answer("Ready", "Ready"), "503": _answer("Not ready", "Ready")},
            security=_OPEN,
        )
    },
    "/metrics": {
        "get": _operation(
            "Prometheus metrics",
            {"200": {"description": "Metrics", "content": {"text/plain": {"schema": {}}}}},
        )
    },
    "/openapi.json": {
        "get": _operation(
            "This description",
            {"200": {"description": "OpenAPI 3.1", "content": {"application/json": {}}}},
            security=_OPEN,
        )
    },
    "/requests": {
        "post": _operation(
            "Ask an approver about a page",
            {
                "202": _answer("Started", "Submitted"),
                "200": _answer("The pair is already known", "Submitted"),
                "403": _error("Cross-site request refused"),
                "415": _error("The body is not JSON"),
                "422": _error("A field is not valid; the message names it"),
                **_ENGINE_DOWN,
            },
            body=_json("Submission"),
        ),
        "get": _operation(
            "One page of requests",
            {"200": _answer("The page", "Listing"), "422": _error("A bad parameter")},
            parameters=[
                _query("state", "Only requests in this state.", {"enum": list(REQUEST_STATES)}),
                _query("approver", "Only requests this address decides.", {"type": "string"}),
                _query(
                    "limit",
                    "Rows per page (default 50).",
                    {"type": "integer", "minimum": 1, "maximum": LISTING_LIMIT_MAX},
                ),
                _query("cursor", "Where the previous page ended.", {"type": "string"}),
            ],
        ),
    },
    "/requests/{request_id}": {
        "get": _operation(
            "A request's status",
            {"200": _answer("The request", "Status"), "404": _error("Unknown")},
            parameters=[_ID],
        ),
        "delete": _operation(
            "Cancel a request that has not ended",
            {
                "202": _answer("Cancelling", "Cancelling"),
                "403": _error("Cross-site request refused"),
                "404": _error("Unknown"),
                "409": _error("Already ended"),
                "422": _error("A bad body"),
            },
            parameters=[_ID],
            body=_json("Reason"),
            body_required=False,
        ),
    },
    "/requests/{request_id}/events": {
        "get": _operation(
            "The request's audit trail and whether it checks out",
            {"200": _answer("The trail", "Events"), "404": _error("Unknown")},
            parameters=[_ID],
        )
    },
    "/requests/{request_id}/decision": {
        "post": _operation(
            "Decide the waiting round as the operator",
            {
                "200": _answer("Decided", "Outcome"),
                "403": _error("Cross-site request refused"),
                "404": _error("Unknown"),
                "409": _error("No round waits, or someone decided first"),
                "410": _error("The round expired or was cancelled"),
                "415": _error("The body is not JSON"),
                "422": _error("A bad verdict or reason"),
            },
            parameters=[_ID],
            body=_json("OperatorVerdict"),
        )
    },
    "/requests/{request_id}/reassign": {
        "post": _operation(
            "Hand an approver's place in the waiting round to someone else",
            {
                "200": _answer("Handed over", "Reassignment"),
                "403": _error("Cross-site request refused, or not one of the round's approvers"),
                "404": _error("Unknown"),
                "409": _error("No round waits, or the approver already answered"),
                "415": _error("The body is not JSON"),
                "422": _error("A bad address"),
            },
            parameters=[_ID],
            body=_json("Reassignment"),
        )
    },
    "/audit/events": {
        "get": _operation(
            "Every kept event, as JSON lines",
            {"200": {"description": "Events", "content": _NDJSON}, "422": _error("Bad since")},
            parameters=[
                _query("since", "Epoch ms; older events are left out.", {"type": "integer"}),
            ],
        )
    },
    "/audit/verify": {
        "get": _operation(
            "Every kept request's verification, as JSON lines",
            {"200": {"description": "Verifications", "content": _NDJSON}},
        )
    },
    "/decide/{token}": {
        "get": _operation(
            "The approver's page (never decides: mail scanners fetch links)",
            {
                "200": _page("The page"),
                "403": _page("The link is not valid"),
                "410": _page("The link has expired, or its round ended without a decision"),
            },
            security=_OPEN,
            parameters=[
                _TOKEN,
                _query("verdict", "Preselect a choice.", {"enum": ["approve", "reject"]}),
            ],
        ),
        "post": _operation(
            "Commit the approver's decision",
            {
                "200": _page("Decided"),
                "403": _page("The link is not valid"),
                "409": _page("Already decided"),
                "410": _page("The round expired or was cancelled"),
                "422": _page("No verdict, or a bad reason"),
            },
            security=_OPEN,
            parameters=[_TOKEN],
            body={
                "application/x-www-form-urlencoded": {
                    "schema": {"$ref": "#/components/schemas/Verdict"}
                },
                **_json("Verdict"),
            },
        ),
    },
    "/decide/{token}/delegate": {
        "post": _operation(
            "The approver hands their place to someone else",
            {
                "200": _page("Handed over"),
                "403": _page("The link is not valid"),
                "409": _page("The round no longer waits, or the approver already answered"),
                "422": _page("A bad address, or one MAILGATE_ALLOWED_APPROVERS refuses"),
            },
            security=_OPEN,
            parameters=[_TOKEN],
            body={
                "application/x-www-form-urlencoded": {
                    "schema": {"$ref": "#/components/schemas/Delegation"}
                },
                **_json("Delegation"),
            },
        ),
    },
}


async def serve(request: Request) -> Response:
    return JSONResponse(document(gateway(request).public_url))


def document(server_url: str) -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Mailgate",
            "version": __version__,
            "description": "Email-native human approval. docs/http-api.md explains each call.",
        },
        "servers": [{"url": server_url}],
        "paths": PATHS,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API token (MAILGATE_API_TOKEN or MAILGATE_API_TOKENS).",
                },
                "session": {
                    "type": "apiKey",
                    "in": "cookie",
                    "name": SESSION_COOKIE,
                    "description": "Set by POST /login.",
                },
            },
        },
    }
