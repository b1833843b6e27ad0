#!/usr/bin/env bash
# Install (first time only) and run the whole test suite against real
# components: Prefect server, Dask, VTK offscreen, the gateway, Chromium.
# Extra arguments go to pytest (e.g. -k gateway, -m "not browser").
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export VTK_DEFAULT_OPENGL_WINDOW=${VTK_DEFAULT_OPENGL_WINDOW:-vtkEGLRenderWindow}
exec .venv/bin/python -m pytest -m "not gpu" "$@"
