#!/usr/bin/env bash
# Make a fresh Debian/Ubuntu machine ready: system packages (only those missing), then a
# virtualenv in .venv with bgworker installed. Sourced by scripts/run and scripts/test.
set -euo pipefail

extra="${1:-}"   # "test" installs the test tools too; "bench" the benchmarks' tools (and wrk)
cd "$(dirname "${BASH_SOURCE[0]}")/.."

missing=()
command -v python3 >/dev/null || missing+=(python3)
command -v redis-server >/dev/null || missing+=(redis-server)
python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
[ "$extra" = test ] && { command -v ps >/dev/null || missing+=(procps); }
[ "$extra" = bench ] && { command -v wrk >/dev/null || missing+=(wrk); }
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "need root or sudo to install: ${missing[*]}" >&2; exit 1; }
    sudo=sudo
  fi
  echo "installing ${missing[*]} with apt-get" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

python3 - <<'PY' || exit 1
import sys
if sys.version_info < (3, 11):
    sys.exit(f"bgworker needs Python >= 3.11; this python3 is {sys.version.split()[0]}")
PY

[ -x .venv/bin/python ] || python3 -m venv .venv
# pipefail keeps pip's own exit status; the filter only drops pip's noise about index
# locations that some machines configure and do not have.
quiet() { "$@" 2>&1 | { grep -v '^WARNING: Location' || true; }; }
quiet .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
if [ -n "$extra" ]; then spec=".[$extra]"; else spec="."; fi
# setuptools warns on every editable install, from inside pip's build environment, that
# folders named like the package may shadow it (a dozen lines, on every start): that is
# what an editable install is. Only that warning is filtered; errors still show.
PYTHONWARNINGS="ignore:Editable installation" \
  quiet .venv/bin/python -m pip install -q --disable-pip-version-check -e "$spec"
.venv/bin/python -c 'import api.app, worker.cli' # fails loudly if the install did not work
