"""The OpenAPI 3.1 document the gateway serves at ``/api/openapi.json``."""

from __future__ import annotations

from typing import Any

from prefect_hpcviz import __version__


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
    viz_id = {"name": "viz_id", "in": "path", "required": True, "schema": {"type": "string"}}
    sid = {"name": "session_id", "in": "path", "required": True, "schema": {"type": "string"}}
    link = {
        "type": "object",
        "properties": {k: {"type": "string"} for k in ("id", "link", "url", "expires_at")},
    }
    create = {
        "type": "object",
        "required": ["data"],
        "properties": {
            "data": {"type": "string", "description": "path or URL of the (reduced) dataset"},
            "app": {"type": "string", "default": "explorer"},
            "title": {"type": "string"},
            "launcher": {
                "type": "object",
                "properties": {
                    "kind": {"type": "string", "default": "local"},
                    "options": {
                        "type": "object",
                        "description": "backend settings; 'command' is a template list",
                    },
                },
            },
            "warm": {"type": "boolean", "default": False},
            "link_ttl_s": {"type": "number"},
            "view": {"type": "object"},
        },
    }

    def ok(description: str, schema: dict | None = None) -> dict:
        body = {"description": description}
        if schema:
            body["content"] = {"application/json": {"schema": schema}}
        return body

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
                    "responses": {"200": ok("list")},
                },
                "post": {
                    "summary": "register a visualization",
                    "security": admin,
                    "requestBody": {"content": {"application/json": {"schema": create}}},
                    "responses": {"201": ok("registered", link), "400": ok("bad input")},
                },
            },
            "/api/visualizations/{viz_id}": {
                "parameters": [viz_id],
                "get": {"summary": "describe", "security": admin, "responses": {"200": ok("visualization")}},
                "delete": {
                    "summary": "revoke links and stop the server",
                    "security": admin,
                    "responses": {"200": ok("revoked")},
                },
            },
            "/api/visualizations/{viz_id}/links": {
                "parameters": [viz_id],
                "post": {"summary": "new link", "security": admin, "responses": {"201": ok("link", link)}},
            },
            "/api/visualizations/{viz_id}/launch": {
                "parameters": [viz_id],
                "post": {
                    "summary": "start the viz server now",
                    "security": admin,
                    "responses": {"202": ok("launching")},
                },
            },
            "/api/sessions/{session_id}": {
                "parameters": [sid],
                "get": {
                    "summary": "describe a session",
                    "security": admin,
                    "responses": {"200": ok("session")},
                },
            },
            "/api/sessions/{session_id}/stop": {
                "parameters": [sid],
                "post": {
                    "summary": "stop a session's server now (its links stay valid)",
                    "security": admin,
                    "responses": {"200": ok("session")},
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
                        "403": ok("wrong key or host not allowed"),
                        "409": ok("session not starting"),
                    },
                },
            },
        },
    }
