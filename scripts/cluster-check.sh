#!/usr/bin/env bash
# make cluster-check: the tests that run workers under a real SLURM (pytest -m slurm:
# tests/test_slurm.py and the offline-mode tests of tests/test_offline.py). Each test starts
# its own one-node clusters from Debian's slurm-wlm and munge (tests/support/slurm.py: own
# munge key and socket, controller, node daemon, ports and state in a temporary folder;
# compute nodes without a route to the database in a network namespace) and stops them.
#
# Installs slurm-wlm, munge and iproute2 with apt-get when they are missing (nothing else
# of the system is changed: no service is enabled, /etc/slurm is not written). Says SKIPPED
# and exits 0 only where that is impossible: not root (slurmd starts jobs as their user,
# and namespaces need root) or the packages cannot be installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PATH=$PATH:/usr/sbin:/sbin
PACKAGES="slurm-wlm munge iproute2"

log() { printf '[cluster-check] %s\n' "$*"; }
skip() { printf '[cluster-check] SKIPPED: %s; no SLURM test ran\n' "$*"; exit 0; }

T0=$(date +%s.%N)
[ "$(id -u)" -eq 0 ] || skip "not root (a test cluster's slurmd and network namespaces need root)"
missing=""
for pkg in $PACKAGES; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
        || missing="$missing $pkg"
done
if [ -n "$missing" ]; then
    log "installing$missing"
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
            --no-install-recommends $missing; } > /tmp/nft-fw-cluster-apt.log 2>&1; then
        tail -n 20 /tmp/nft-fw-cluster-apt.log >&2
        skip "apt-get could not install$missing"
    fi
fi
log "slurm-wlm $(dpkg-query -W -f='${Version}' slurm-wlm), munge $(dpkg-query -W -f='${Version}' munge)"
bash scripts/bootstrap.sh dev
T1=$(date +%s.%N)
.venv/bin/pytest -m slurm -p no:cacheprovider "$@"
T2=$(date +%s.%N)
awk -v a="$T0" -v b="$T1" -v c="$T2" \
    'BEGIN { printf "[cluster-check] set-up %.1f s, tests %.1f s\n", b - a, c - b }'
