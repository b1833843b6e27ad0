#!/usr/bin/env bash
# Install (first time only) and run the whole test suite against real
# components: Prefect server, Dask, VTK offscreen, the gateway, Chromium,
# Azurite, nginx, and a one-node Slurm (started here, stopped at the end).
# Extra arguments go to pytest (e.g. -k gateway, -m "not browser").
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

# A real one-node Slurm for the slurm tests (as root, ~10 s), from the
# workplace's shared CI scripts next to this checkout. Without them the slurm
# tests skip, or fail under CI=true.
SLURM_CI=../shared/ci
if [ -f "$SLURM_CI/start-slurm.sh" ] && [ "$(id -u)" = 0 ]; then
  trap 'bash "$SLURM_CI/stop-slurm.sh" >/dev/null 2>&1 || true' EXIT
  bash "$SLURM_CI/start-slurm.sh"
elif [ "${CI:-}" = true ]; then
  echo "test: $SLURM_CI/start-slurm.sh is missing or we are not root; the slurm tests need a real Slurm" >&2
  exit 1
fi

export VTK_DEFAULT_OPENGL_WINDOW=${VTK_DEFAULT_OPENGL_WINDOW:-vtkEGLRenderWindow}
.venv/bin/python -m pytest -m "not gpu" "$@"
