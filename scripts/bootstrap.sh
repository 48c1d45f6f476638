#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian 12 machine: system libraries, a .venv with GPAW
# built against libxc/FFTW/BLAS, and nft-fw installed editable with the tested versions.
#   scripts/bootstrap.sh run   what `make demo` needs
#   scripts/bootstrap.sh dev   that, plus what the tests need (pytest, ruff, mypy, a
#                              headless Chromium for the report test)
# Every step checks before it acts, so a second run installs nothing. Each step prints one
# line: what it did and how long it took; the tools' own output goes to a log that is
# shown only when a step fails.
set -euo pipefail
cd "$(dirname "$0")/.."

MODE=${1:-dev}
case "$MODE" in run | dev) ;; *) echo "usage: $0 [run|dev]" >&2; exit 2 ;; esac
PYTHON=${PYTHON:-python3.11}
VENV=${VENV:-.venv}
GPAW_VERSION=26.7.0
APT_PACKAGES="libxc-dev libopenblas-dev libfftw3-dev"
# dev: a headless Chromium (report page test) and Debian's LAMMPS with its Python module
# (nft_fw.potential.lammps; liblammps-dev holds the liblammps.so the module loads)
[ "$MODE" = dev ] && APT_PACKAGES="$APT_PACKAGES chromium-headless-shell lammps python3-lammps liblammps-dev"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore PIP_PROGRESS_BAR=off

LOG=$(mktemp -t nft-fw-setup.XXXXXX)
trap 'rm -f "$LOG"' EXIT
T_ALL=$(date +%s.%N)

elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f s", b - a }'; }
say() { printf '[setup] %-64s %s\n' "$1" "$2"; }

# quiet CMD...: the command's output goes to the log, printed (last 60 lines) on failure
quiet() {
    if ! "$@" >> "$LOG" 2>&1; then
        tail -n 60 "$LOG" >&2
        printf '[setup] failed: %s\n' "$*" >&2
        exit 1
    fi
}

# 1. system packages
t=$(date +%s.%N)
missing=""
for pkg in $APT_PACKAGES; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
        || missing="$missing $pkg"
done
if [ -n "$missing" ]; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    quiet $SUDO apt-get update -qq
    quiet env DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq \
        --no-install-recommends $missing
    say "apt packages: installed$missing" "$(elapsed "$t")"
else
    say "apt packages ($(echo $APT_PACKAGES | wc -w) needed): present" "$(elapsed "$t")"
fi

# 2. the virtual environment
t=$(date +%s.%N)
if [ ! -x "$VENV/bin/python" ]; then
    quiet "$PYTHON" -m venv "$VENV"
    quiet "$VENV/bin/python" -m pip install -q --upgrade pip setuptools wheel
    say "$VENV with $("$VENV/bin/python" -V): created" "$(elapsed "$t")"
else
    say "$VENV with $("$VENV/bin/python" -V): present" "$(elapsed "$t")"
fi
PY="$VENV/bin/python"

# 3. GPAW, built from source against the system libraries
t=$(date +%s.%N)
if ! "$PY" -c "import gpaw, sys; sys.exit(gpaw.__version__ != '$GPAW_VERSION')" 2>/dev/null; then
    # Build isolation supplies numpy and pybind11 to GPAW's build; the constraints keep the
    # runtime numpy the tested one.
    quiet env CC=g++ GPAW_CONFIG="$PWD/scripts/siteconfig.py" \
        "$PY" -m pip install -q --no-cache-dir -c constraints.txt "gpaw==$GPAW_VERSION" numpy
    say "GPAW $GPAW_VERSION: built (CC=g++, scripts/siteconfig.py)" "$(elapsed "$t")"
else
    say "GPAW $GPAW_VERSION: present" "$(elapsed "$t")"
fi

# 4. nft-fw and its dependencies, exactly the tested set (constraints.txt)
t=$(date +%s.%N)
target="."
[ "$MODE" = dev ] && target=".[dev]"
stamp="$VENV/.nft-fw-deps-$MODE"
want=$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
# the dev set includes the run set
if [ "$MODE" = run ] && [ "$(cat "$VENV/.nft-fw-deps-dev" 2>/dev/null)" = "$want" ]; then
    stamp="$VENV/.nft-fw-deps-dev"
fi
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    quiet "$PY" -m pip install -q -e "$target" -c constraints.txt
    quiet "$PY" -m pip check
    echo "$want" > "$stamp"
    say "nft-fw ($target) with constraints.txt: installed, pip check clean" "$(elapsed "$t")"
else
    say "nft-fw ($target) with constraints.txt: up to date" "$(elapsed "$t")"
fi

# 5. a build without libxc or FFTW imports fine but is crippled: refuse it
t=$(date +%s.%N)
info=$("$VENV/bin/gpaw" info 2>&1)
for feature in libxc FFTW; do
    if ! printf '%s\n' "$info" | grep -E "^\|? *$feature" | grep -q "yes"; then
        printf '%s\n' "$info" >&2
        printf '[setup] gpaw info does not report %s: rebuild with rm -rf %s && make setup\n' \
            "$feature" "$VENV" >&2
        exit 1
    fi
done
say "GPAW has libxc and FFTW (gpaw info)" "$(elapsed "$t")"

# 6. (dev) Debian's LAMMPS Python module, and only it, visible in the venv
if [ "$MODE" = dev ]; then
    t=$(date +%s.%N)
    site=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    mkdir -p "$VENV/lib/nft-fw-system"
    ln -sfn /usr/lib/python3/dist-packages/lammps "$VENV/lib/nft-fw-system/lammps"
    echo "$(cd "$VENV/lib/nft-fw-system" && pwd)" > "$site/nft-fw-system.pth"
    if ! "$PY" -c 'import lammps; lammps.lammps(cmdargs=["-log", "none", "-screen", "none"]).close()' \
        >> "$LOG" 2>&1; then
        tail -n 20 "$LOG" >&2
        printf '[setup] the lammps module does not load in %s (apt-get install lammps python3-lammps liblammps-dev)\n' "$VENV" >&2
        exit 1
    fi
    say "LAMMPS $("$PY" -c 'import lammps; l = lammps.lammps(cmdargs=["-log", "none", "-screen", "none"]); print(l.version()); l.close()') Python module: linked into $VENV" "$(elapsed "$t")"
fi

versions=$("$PY" -c 'import gpaw, jax, fireworks; print(f"gpaw {gpaw.__version__}, jax {jax.__version__}, fireworks {fireworks.__version__}")')
say "ready ($MODE): $versions" "$(elapsed "$T_ALL")"
