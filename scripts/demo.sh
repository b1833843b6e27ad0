#!/usr/bin/env bash
# Install (first time only) and run the demo: a synthetic simulation becomes a
# clickable 3D view in a local Prefect UI. Extra arguments go to `hpcviz demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export VTK_DEFAULT_OPENGL_WINDOW=${VTK_DEFAULT_OPENGL_WINDOW:-vtkEGLRenderWindow}
exec .venv/bin/hpcviz demo "$@"
