#!/usr/bin/env bash
# Install what hpcviz needs on a fresh Debian 12 machine, then stop.
# Idempotent: a second run installs nothing that is already there.
#
#   bash scripts/setup.sh          # runtime (demo) + test tools
#
# Debian packages (as root, only when missing): EGL/Mesa for offscreen VTK
# rendering, Chromium for the browser tests, python3-venv when venv is absent.
# Python packages go to .venv in the repository.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
APT_PACKAGES=(libegl1 libegl-mesa0 libgl1-mesa-dri libgl1 libglx-mesa0 libxrender1 libx11-6 libxext6 libxt6 libgomp1 chromium fonts-dejavu-core curl)
# sshd for the Slurm backend's ssh test (a local command node on 127.0.0.1).
APT_PACKAGES+=(openssh-server)
# nginx runs the README's TLS proxy config in front of the gateway (tests/test_gateway_nginx.py).
APT_PACKAGES+=(nginx-light openssl)
# Node/npm run Azurite, the Azure Blob emulator of the azurite tests.
command -v npm >/dev/null 2>&1 || APT_PACKAGES+=(nodejs npm)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if ! "$PYTHON" -c "import ensurepip, venv" >/dev/null 2>&1; then missing+=(python3-venv); fi
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "setup: missing Debian packages: ${missing[*]}; run as root or: sudo apt-get install ${missing[*]}" >&2
    exit 1
  fi
  echo "setup: installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=300 update -qq
  apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.hpcviz-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "setup: installing prefect-hpcviz and its dependencies into .venv"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[dev,azure,slurm]"
  touch "$stamp"
fi
# Azurite (Azure Blob emulator) for the azurite tests, into git-ignored .bench/.
if [ ! -x .bench/node_modules/.bin/azurite-blob ]; then
  echo "setup: installing azurite into .bench/"
  npm install --prefix .bench --no-audit --no-fund --silent azurite
fi
