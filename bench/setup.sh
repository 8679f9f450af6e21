#!/usr/bin/env bash
# What `make bench` needs: bgworker in .venv with the `bench` extra (pyvips and its bundled
# libvips, numpy, matplotlib) and wrk from the system packages, all through
# scripts/bootstrap.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/bootstrap.sh bench
.venv/bin/python -c 'import pyvips, matplotlib, numpy' # fails loudly if the install did not work
