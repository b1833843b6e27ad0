"""The OpenAPI 3.1 document the gateway serves at ``/api/openapi.json``."""

from __future__ import annotations

from typing import Any

from prefect_hpcviz import __version__
from prefect_hpcviz.viz.backends import backend_kinds

MAX_LINK_TTL_S = 10 * 366 * 24 * 3600
"""The longest link lifetime the API accepts (10 years)."""


def openapi_document(server_url: str, *, metrics_public: bool = False) -> dict[str, Any]:
    """A small OpenAPI 3.1 description of the REST API.

    ``metrics_public``: ``/metrics`` is open (else it needs the admin token).

    Example:
        >>> openapi_document("http://127.0.0.1:8765")["paths"]["/metrics"]["get"]["security"]
        [{'admin': []}]
    """
    admin = [{"admin": []}]
    counts = {"type": "object", "additionalProperties": {"type": "integer"}}
    health = {
        "type": "object",
        "required": ["status", "registry"],
        "properties": {
            "status": {"type": "string", "enum": ["ok", "error"]},
            "version": {"type": "string"},
            "registry": {"type": "string", "description": "'ok', or why the SQLite registry cannot be read"},
            "sessions": {**counts, "description": "active sessions by state (queued, starting, ready)"},
            "active_sessions": {"type": "integer"},
            "open_websockets": {"type": "integer"},
        },
    }
    error = {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}
    viz_id = {"name": "viz_id", "in": "path", "required": True, "schema": {"type": "string"}}
    sid = {"name": "session_id", "in": "path", "required": True, "schema": {"type": "string"}}
    link = {
        "type": "object",
        "properties": {k: {"type": "string"} for k in ("id", "link", "url", "expires_at")},
    }
    link_ttl = {
        "type": ["number", "null"],
        "exclusiveMinimum": 0,
        "maximum": MAX_LINK_TTL_S,
        "description": "lifetime of the link in seconds (default: the gateway's link_ttl_s)",
    }
    create = {
        "type": "object",
        "required": ["data"],
        "additionalProperties": False,
        "properties": {
            "data": {
                "type": "string",
                "pattern": r"\S",
                "description": "path or URL of the (reduced) dataset",
            },
            "app": {
                "type": ["string", "null"],
                "pattern": r"^[A-Za-z0-9_.-]{0,64}$",
                "description": "the viz app; empty or null: explorer",
            },
            "title": {"type": ["string", "null"], "description": "empty or null: the data's file name"},
            "launcher": {
                "type": ["object", "null"],
                "description": "where the viz server runs; null: the gateway's default launcher",
                "additionalProperties": False,
                "properties": {
                    "kind": {
                        "type": ["string", "null"],
                        "enum": [*backend_kinds(), "", None],
                        "description": "the backend; empty or null: local",
                    },
                    "options": {
                        "type": ["object", "null"],
                        "description": (
                            "the backend's settings (its constructor's keyword arguments; unknown "
                            "ones are refused with 400), plus 'command': a template list"
                        ),
                    },
                },
            },
            "warm": {"type": "boolean", "default": False},
            "link_ttl_s": link_ttl,
            "view": {"type": ["object", "null"], "description": "initial view settings for the app"},
        },
    }
    new_link = {"type": "object", "additionalProperties": False, "properties": {"link_ttl_s": link_ttl}}

    def ok(description: str, schema: dict | None = None) -> dict:
        body = {"description": description}
        if schema:
            body["content"] = {"application/json": {"schema": schema}}
        return body

    denied = {"401": ok("missing or wrong admin token", error)}
    no_viz = {**denied, "404": ok("no such visualization", error)}
    no_session = {**denied, "404": ok("no such session", error)}
    bad = {"400": ok("bad input: the message names the field, the problem and the fix", error)}
    revoked = {"409": ok("the visualization was revoked", error)}

    return {
        "openapi": "3.1.0",
        "info": {"title": "prefect-hpcviz gateway", "version": __version__},
        "servers": [{"url": server_url}],
        "components": {
            "securitySchemes": {
                "admin": {"type": "http", "scheme": "bearer"},
                "session": {"type": "http", "scheme": "bearer"},
            }
        },
        "paths": {
            "/healthz": {
                "get": {
                    "summary": "health: the registry answers; active sessions by state (no authentication)",
                    "security": [],
                    "responses": {"200": ok("healthy", health), "503": ok("the registry cannot be read", health)},
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics: sessions by state, bytes proxied, launches, launch latency",
                    "description": (
                        "Prometheus text exposition format. Open when the gateway runs with "
                        "metrics_public (--metrics-public); otherwise it needs the admin bearer token."
                    ),
                    "security": [] if metrics_public else admin,
                    "responses": {
                        "200": {
                            "description": "metrics",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        },
                        **({} if metrics_public else {"401": ok("missing or wrong admin token")}),
                    },
                }
            },
            "/api/visualizations": {
                "get": {
                    "summary": "list visualizations",
                    "security": admin,
                    "responses": {"200": ok("list"), **denied},
                },
                "post": {
                    "summary": "register a visualization",
                    "security": admin,
                    "requestBody": {"required": True, "content": {"application/json": {"schema": create}}},
                    "responses": {"201": ok("registered", link), **bad, **denied},
                },
            },
            "/api/visualizations/{viz_id}": {
                "parameters": [viz_id],
                "get": {
                    "summary": "describe (also after it was revoked: 'revoked' is then true)",
                    "security": admin,
                    "responses": {"200": ok("visualization"), **no_viz},
                },
                "delete": {
                    "summary": "revoke: its links and cookies stop working and its server is stopped; "
                    "the record stays, with 'revoked': true",
                    "security": admin,
                    "responses": {"200": ok("revoked"), **no_viz},
                },
            },
            "/api/visualizations/{viz_id}/links": {
                "parameters": [viz_id],
                "post": {
                    "summary": "new link",
                    "security": admin,
                    "requestBody": {"content": {"application/json": {"schema": new_link}}},
                    "responses": {"201": ok("link", link), **bad, **no_viz, **revoked},
                },
            },
            "/api/visualizations/{viz_id}/launch": {
                "parameters": [viz_id],
                "post": {
                    "summary": "start the viz server now",
                    "security": admin,
                    "responses": {"202": ok("launching"), **no_viz, **revoked},
                },
            },
            "/api/sessions/{session_id}": {
                "parameters": [sid],
                "get": {
                    "summary": "describe a session",
                    "security": admin,
                    "responses": {"200": ok("session"), **no_session},
                },
            },
            "/api/sessions/{session_id}/stop": {
                "parameters": [sid],
                "post": {
                    "summary": "stop a session's server now (its links stay valid)",
                    "security": admin,
                    "responses": {"200": ok("session"), **no_session},
                },
            },
            "/api/sessions/{session_id}/logs": {
                "parameters": [
                    sid,
                    {
                        "name": "lines",
                        "in": "query",
                        "description": "how many lines (default 200); below 1 counts as 1, above 2000 as 2000",
                        "schema": {"type": "integer"},
                    },
                ],
                "get": {
                    "summary": "the last lines of the session's job output (stdout and stderr), as text",
                    "security": admin,
                    "responses": {
                        "200": {"description": "text", "content": {"text/plain": {"schema": {"type": "string"}}}},
                        **bad,
                        **no_session,
                    },
                },
            },
            "/api/cull": {
                "post": {
                    "summary": "stop idle and too old sessions and jobs no session has, now; lists the sessions it stopped",
                    "security": admin,
                    "responses": {"200": ok("checked count and stopped sessions"), **denied},
                },
            },
            "/api/sessions/{session_id}/ready": {
                "parameters": [sid],
                "post": {
                    "summary": "a viz server reports host and port",
                    "security": [{"session": []}],
                    "requestBody": {
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {"host": {"type": "string"}, "port": {"type": "integer"}},
                                }
                            }
                        }
                    },
                    "responses": {
                        "200": ok("accepted"),
                        **bad,
                        "401": ok("no session key", error),
                        "403": ok("wrong key or host not allowed", error),
                        "404": ok("no such session", error),
                        "409": ok("session not starting", error),
                    },
                },
            },
            "/api/sessions/{session_id}/tunnel": {
                "parameters": [sid],
                "get": {
                    "summary": "reverse mode: a viz server dials in (websocket upgrade); the session is then "
                    "ready and reached through this connection (see viz/gateway/reverse_tunnel.py)",
                    "security": [{"session": []}],
                    "responses": {
                        "101": {"description": "switching to the control websocket"},
                        **bad,
                        "401": ok("no session key", error),
                        "403": ok("wrong key, no such session, or the session is not starting", error),
                        "409": ok("the session already has a reverse connection", error),
                    },
                },
            },
            "/api/sessions/{session_id}/tunnel/streams/{number}": {
                "parameters": [
                    sid,
                    {"name": "number", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 0}},
                ],
                "get": {
                    "summary": "reverse mode: the websocket carrying stream NUMBER the gateway asked for",
                    "security": [{"session": []}],
                    "responses": {
                        "101": {"description": "switching to the stream websocket"},
                        **bad,
                        "401": ok("no session key", error),
                        "403": ok("wrong key or no such active session", error),
                        "404": ok("no such stream waits", error),
                    },
                },
            },
        },
    }
