#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian 12 machine: system libraries, a .venv
# with GPAW built against libxc/FFTW/BLAS, and nft-fw installed editable.
# Every step checks before it acts, so a second run installs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
VENV=${VENV:-.venv}
GPAW_VERSION=26.7.0
APT_PACKAGES="libxc-dev libopenblas-dev libfftw3-dev"

log() { printf '[bootstrap] %s\n' "$*"; }

missing=""
for pkg in $APT_PACKAGES; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing="$missing $pkg"
done
if [ -n "$missing" ]; then
    log "apt-get install:$missing"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
fi

if [ ! -x "$VENV/bin/python" ]; then
    log "creating $VENV with $PYTHON"
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip setuptools wheel
fi
PY="$VENV/bin/python"

if ! "$PY" -c "import gpaw, sys; sys.exit(gpaw.__version__ != '$GPAW_VERSION')" 2>/dev/null; then
    log "building gpaw $GPAW_VERSION (CC=g++, scripts/siteconfig.py)"
    # Build isolation supplies numpy and pybind11 to GPAW's build; the
    # constraints keep the runtime numpy the tested one.
    CC=g++ GPAW_CONFIG="$PWD/scripts/siteconfig.py" \
        "$PY" -m pip install -q --no-cache-dir -c constraints.txt "gpaw==$GPAW_VERSION" numpy
fi

stamp="$VENV/.nft-fw-deps"
want=$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    log "pip install -e .[dev] -c constraints.txt (the tested set)"
    "$PY" -m pip install -q -e ".[dev]" -c constraints.txt
    "$PY" -m pip check
    echo "$want" > "$stamp"
fi

# A build without libxc or FFTW imports fine but is crippled: refuse it.
info=$("$VENV/bin/gpaw" info 2>&1)
for feature in libxc FFTW; do
    if ! printf '%s\n' "$info" | grep -E "^\|? *$feature" | grep -q "yes"; then
        printf '%s\n' "$info" >&2
        log "gpaw info does not report $feature: rebuild with 'rm -rf $VENV && make setup'" >&2
        exit 1
    fi
done
log "ready: $("$PY" -c 'import gpaw, jax, fireworks; print("gpaw", gpaw.__version__, "jax", jax.__version__, "fireworks", fireworks.__version__)')"
