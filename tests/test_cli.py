"""`hpcviz` as a person runs it: help that explains, and bad input that stops
at once with one message naming the input, before any server starts."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

HPCVIZ = [sys.executable, "-m", "prefect_hpcviz.cli"]


def run_hpcviz(*args: str, home: Path, timeout: float = 60) -> tuple[subprocess.CompletedProcess, float]:
    env = {k: v for k, v in os.environ.items() if k not in {"PREFECT_API_URL", "HPCVIZ_GATEWAY_URL", "HPCVIZ_GATEWAY_TOKEN"}}
    env["HPCVIZ_HOME"] = str(home)
    started = time.monotonic()
    result = subprocess.run([*HPCVIZ, *args], env=env, capture_output=True, text=True, timeout=timeout)
    return result, time.monotonic() - started


def assert_stopped_before_anything_started(result: subprocess.CompletedProcess, home: Path) -> None:
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"one clear message, got: {result.stderr}"
    assert lines[0].startswith("hpcviz: ")
    assert not (home / "prefect").exists(), "no Prefect server was started"
    assert not (home / "gateway").exists(), "no gateway was started"
    reduced = home / "reduced"
    assert not reduced.exists() or not any(reduced.iterdir()), "nothing half-written is left"


def test_help_explains_every_command_and_option():
    top = subprocess.run([*HPCVIZ, "--help"], capture_output=True, text=True, check=True).stdout
    for command in ("demo", "visualize", "gateway", "serve"):
        assert command in top
    visualize = subprocess.run([*HPCVIZ, "visualize", "--help"], capture_output=True, text=True, check=True).stdout
    for option in ("--recipe", "--workers", "--warm", "--idle-timeout", "--prefect-port", "--gateway-port", "--public-url", "--no-serve"):
        assert option in visualize
    gateway = subprocess.run([*HPCVIZ, "gateway", "--help"], capture_output=True, text=True, check=True).stdout
    assert "--public-url" in gateway and "--idle-timeout" in gateway


def test_a_missing_path_stops_at_once_naming_it(tmp_path):
    missing = tmp_path / "run7" / "out.pvd"
    result, _ = run_hpcviz("visualize", str(missing), home=tmp_path / "home")
    assert str(missing) in result.stderr
    assert "no such file" in result.stderr.lower()
    assert_stopped_before_anything_started(result, tmp_path / "home")


def test_a_truncated_file_stops_at_once_naming_it(tmp_path, small_simulation):
    broken = tmp_path / "broken.vti"
    whole = (small_simulation.parent / "simulation_000000.vti").read_bytes()
    broken.write_bytes(whole[: len(whole) // 2])
    result, _ = run_hpcviz("visualize", str(broken), home=tmp_path / "home")
    assert str(broken) in result.stderr
    assert broken.read_bytes() == whole[: len(whole) // 2], "the original is never modified"
    assert_stopped_before_anything_started(result, tmp_path / "home")


def test_an_unknown_field_in_the_recipe_names_the_field_and_the_fields_there_are(tmp_path, small_simulation):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("steps:\n  - contour: {field: temperature, values: [1.0]}\n")
    result, _ = run_hpcviz("visualize", str(small_simulation), "--recipe", str(recipe), home=tmp_path / "home")
    assert "temperature" in result.stderr
    assert "pressure" in result.stderr, "the message lists the fields that exist"
    assert_stopped_before_anything_started(result, tmp_path / "home")


def test_an_invalid_recipe_names_the_step_the_key_and_the_allowed_values(tmp_path, small_simulation):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("steps:\n  - coarsen: {factor: 2, how: median}\n")
    result, _ = run_hpcviz("visualize", str(small_simulation), "--recipe", str(recipe), home=tmp_path / "home")
    assert "coarsen" in result.stderr and "how" in result.stderr and "mean" in result.stderr
    assert_stopped_before_anything_started(result, tmp_path / "home")


@pytest.mark.parametrize("option", ["--prefect-port", "--gateway-port"])
def test_a_port_in_use_stops_at_once_naming_the_port_and_the_option(tmp_path, small_simulation, option):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result, _ = run_hpcviz("visualize", str(small_simulation), option, str(port), home=tmp_path / "home")
    assert f"port {port}" in result.stderr and option in result.stderr
    assert_stopped_before_anything_started(result, tmp_path / "home")
