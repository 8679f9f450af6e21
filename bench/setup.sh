#!/usr/bin/env bash
# What `make bench` needs: bgworker in .venv (scripts/bootstrap.sh), the `bench` extra
# (pyvips + its bundled libvips, numpy, matplotlib), and wrk from the system packages.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/bootstrap.sh

if ! command -v wrk >/dev/null; then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "need root or sudo to install wrk" >&2; exit 1; }
    sudo=sudo
  fi
  echo "installing wrk with apt-get" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends wrk >/dev/null
fi

quiet() { "$@" 2>&1 | { grep -v '^WARNING: Location' || true; }; }
quiet .venv/bin/python -m pip install -q --disable-pip-version-check -e ".[bench]"
.venv/bin/python -c 'import pyvips, matplotlib, numpy' # fails loudly if the install did not work
