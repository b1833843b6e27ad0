"""The REST API against its own OpenAPI document: schemathesis fuzzes a live gateway.

Schemathesis (the ``st`` command) reads ``/api/openapi.json`` from a real
gateway and sends generated requests, valid and invalid, with the admin
token: every documented operation, boundary values, random data and
stateful sequences (register -> link -> launch -> revoke). Every check runs
except ``use_after_free`` (a revoked visualization stays readable, with
``"revoked": true``) and, for registrations alone, ``positive_data_acceptance``
(a launcher's options depend on its backend); tests/apps/schemathesis.toml
says why.

The bugs it found are pinned by the tests after it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from prefect_hpcviz.viz.gateway import EmbeddedGateway
from tests.conftest import require

HOOKS = Path(__file__).parent / "apps" / "schemathesis_hooks.py"
# Launches (warm registrations, POST .../launch) run this: it ends at once, nothing heavy starts.
QUICK = {"kind": "local", "options": {"standby": 0, "grace_s": 0.5, "command": ["{python}", "-c", "pass"]}}


@pytest.fixture(scope="module")
def gateway():
    with EmbeddedGateway(default_launcher=QUICK, poll_interval_s=0.5) as gw:
        yield gw


def api(gateway, method: str, path: str, **kwargs) -> httpx.Response:
    headers = {"Authorization": f"Bearer {gateway.admin_token}", **kwargs.pop("headers", {})}
    return httpx.request(method, f"{gateway.local_url}{path}", headers=headers, trust_env=False, **kwargs)


def test_schemathesis_finds_no_server_error_and_no_schema_violation(gateway, tmp_path):
    st = shutil.which("st", path=str(Path(sys.executable).parent))
    require(st is not None, "schemathesis", "pip install -e '.[dev]' (it is in the dev extra)")
    before = len(api(gateway, "GET", "/api/visualizations").json()["visualizations"])
    run = subprocess.run(
        [
            st, "--config-file", str(HOOKS.with_name("schemathesis.toml")),
            "run", f"{gateway.local_url}/api/openapi.json",
            "--header", f"Authorization: Bearer {gateway.admin_token}",
            "--max-examples", "30", "--workers", "1", "--no-color",
        ],  # fmt: skip
        env={**os.environ, "SCHEMATHESIS_HOOKS": HOOKS.stem, "PYTHONPATH": str(HOOKS.parent)},
        cwd=tmp_path,  # st keeps its replay files in ./.schemathesis
        capture_output=True,
        text=True,
        timeout=600,
    )
    report = run.stdout + run.stderr
    assert run.returncode == 0, report[-8000:]
    assert "Server error" not in report and "Schema-violating" not in report
    # The admin token worked: generated registrations really reached the registry.
    after = len(api(gateway, "GET", "/api/visualizations").json()["visualizations"])
    assert after > before, report[-3000:]


# ------------------------------------------------------- what it found, pinned
@pytest.mark.parametrize("ttl", ["5.9e23", "1e400", "NaN", "Infinity", "0", "-1"])
def test_a_link_lifetime_out_of_range_is_refused_and_registers_nothing(gateway, ttl):
    # It used to be registered first and then fail with 500 (a year past 9999).
    body = f'{{"data": "/d/ttl-{ttl}", "link_ttl_s": {ttl}}}'
    response = api(gateway, "POST", "/api/visualizations", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert "link_ttl_s" in response.json()["error"] and "10 years" in response.json()["error"]
    listed = api(gateway, "GET", "/api/visualizations").json()["visualizations"]
    assert f"/d/ttl-{ttl}" not in [v["data"] for v in listed]


@pytest.mark.parametrize(
    "body, field",
    [
        ({"data": "/d", "app": False}, "app"),
        ({"data": "/d", "title": 0}, "title"),
        ({"data": "/d", "launcher": {"kind": "local", "options": False}}, "launcher.options"),
        ({"data": "/d", "launcher": {"kind": 0}}, "launcher.kind"),
    ],
)
def test_falsy_values_of_the_wrong_type_are_refused_not_taken_for_defaults(gateway, body, field):
    response = api(gateway, "POST", "/api/visualizations", json=body)
    assert response.status_code == 400 and response.json()["error"].startswith(field)


def test_a_new_link_request_with_an_unknown_key_is_refused(gateway):
    reg = api(gateway, "POST", "/api/visualizations", json={"data": "/d"}).json()
    response = api(gateway, "POST", f"/api/visualizations/{reg['id']}/links", json={"ttl": 60})
    assert response.status_code == 400 and "unknown key(s) ttl" in response.json()["error"]


def test_a_wrong_method_gets_405_with_the_allowed_ones(gateway):
    response = httpx.request("TRACE", f"{gateway.local_url}/healthz", trust_env=False)
    assert response.status_code == 405 and "GET" in response.headers["Allow"]
    assert "Method Not Allowed" in response.json()["error"]


def test_every_admin_operation_documents_its_401(gateway):
    spec = httpx.get(f"{gateway.local_url}/api/openapi.json", trust_env=False).json()
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if method != "parameters" and operation.get("security") == [{"admin": []}]:
                assert "401" in operation["responses"], f"{method.upper()} {path}"
