#!/usr/bin/env bash
# make docker-check: build the images, run a small EMT campaign in compose to its report,
# check it in the database, tear the stack down, print the time of each step.
#
# - Engine: the one `docker info` reaches (DOCKER_HOST or the default socket); otherwise,
#   as root, Debian's docker.io (installed with apt-get if missing) started here with its
#   data under $NFT_FW_DOCKER_ROOT (default /var/lib/nft-fw-docker, kept between runs:
#   images and build cache) and stopped again on exit. Where no engine can be started at
#   all (not root and none running, or dockerd fails), it says so and exits 0.
# - Base image: $NFT_FW_BASE_IMAGE if set (e.g. python:3.11-slim-bookworm where Docker Hub
#   is reachable); otherwise nft-fw-base:bookworm, made once with debootstrap from the
#   Debian mirror ($NFT_FW_DEBIAN_MIRROR, default http://deb.debian.org/debian).
# - Build: --network host (an engine started here has no NAT for its bridges), this
#   machine's apt sources and pip CA bundle handed in as build secrets (nothing of them
#   is stored in an image). Images nft-fw-{worker,trainer,db}:check.
# - Stack: docker/compose.yaml + docker/compose.embedded-db.yaml (the database service runs
#   the project's db image instead of MongoDB's), project nft-fw-check, two label workers,
#   fresh passwords, the database published on a free loopback port.
# - Campaign: docker/check/p79-emt.yaml, submitted in the trainer container; then
#   docker/check/verify.py there; `nft-fw report` writes the plots in the container.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
PATH=$PATH:/usr/sbin:/sbin  # dockerd and debootstrap live there

ROOT=${NFT_FW_DOCKER_ROOT:-/var/lib/nft-fw-docker}
TAG=check
PROJECT=nft-fw-check
CAMPAIGN=p79-emt
BASE_IMAGE=${NFT_FW_BASE_IMAGE:-}
MIRROR=${NFT_FW_DEBIAN_MIRROR:-http://deb.debian.org/debian}
CAMPAIGN_TIMEOUT_S=${NFT_FW_DOCKER_CHECK_TIMEOUT:-1200}

log() { printf '[docker-check] %s\n' "$*"; }
die() { printf '[docker-check] FAILED: %s\n' "$*" >&2; exit 1; }
skip() {
    printf '[docker-check] SKIPPED: %s\n' "$*"
    printf '[docker-check] nothing was built or run; the Docker files are checked statically by tests/test_deployment.py\n'
    exit 0
}

# ---------------------------------------------------------------- timings
declare -a STEP_NAMES=() STEP_SECONDS=()
T_ALL=$(date +%s.%N)
step() {  # step NAME COMMAND...: run it, record its wall time
    local name=$1 t0 t1
    shift
    log "== $name"
    t0=$(date +%s.%N)
    "$@"
    t1=$(date +%s.%N)
    STEP_NAMES+=("$name")
    STEP_SECONDS+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')")
}
print_timings() {
    local i
    printf '[docker-check] timings (s):\n'
    for i in "${!STEP_NAMES[@]}"; do
        printf '  %-34s %8s\n' "${STEP_NAMES[$i]}" "${STEP_SECONDS[$i]}"
    done
    printf '  %-34s %8s\n' "total" "$(awk -v a="$T_ALL" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')"
}

# ---------------------------------------------------------------- clean-up on every exit
DOCKERD_PID=""
STACK_UP=0
WORK=$(mktemp -d)
stop_engine() {  # stop the dockerd this check started (it stops its own containerd)
    [ -n "$DOCKERD_PID" ] || return 0
    log "stopping the engine this check started (dockerd pid $DOCKERD_PID)"
    kill -TERM "$DOCKERD_PID" 2> /dev/null
    for _ in $(seq 60); do
        kill -0 "$DOCKERD_PID" 2> /dev/null || break
        sleep 1
    done
    if kill -0 "$DOCKERD_PID" 2> /dev/null; then
        log "dockerd ignored SIGTERM for 60 s; killing it"
        kill -KILL "$DOCKERD_PID"
    fi
    DOCKERD_PID=""
    # dockerd leaves its network namespace mounted under its exec root when it stops
    awk -v root="$ROOT/exec/" 'index($2, root) == 1 { print $2 }' /proc/mounts \
        | while read -r mount; do umount "$mount"; done
}
cleanup() {
    local rc=$?
    set +e
    if [ "$STACK_UP" = 1 ]; then
        if [ "$rc" != 0 ]; then
            log "logs of the stack (last 60 lines per container):"
            compose logs --no-color --tail 60 >&2
        fi
        log "compose down"
        compose down --volumes --remove-orphans --timeout 30 > "$WORK/down.log" 2>&1 \
            || cat "$WORK/down.log" >&2
    fi
    stop_engine
    rm -rf "$WORK"
    [ "${#STEP_NAMES[@]}" -gt 0 ] && print_timings
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- 1. engine
DOCKER=""
BUILD=()
pick_client() {
    # A client that builds with BuildKit: one with the buildx plugin (Docker 23 and newer
    # need it), or one older than 23 (DOCKER_BUILDKIT=1 uses the engine's own BuildKit).
    local c version
    for c in docker /usr/bin/docker; do
        command -v "$c" > /dev/null || continue
        if "$c" buildx version > /dev/null 2>&1; then
            DOCKER=$c
            BUILD=("$c" buildx build --load)
            return 0
        fi
        version=$("$c" version --format '{{.Client.Version}}' 2> /dev/null || true)
        if [ -n "$version" ] && [ "${version%%.*}" -lt 23 ]; then
            DOCKER=$c
            BUILD=(env DOCKER_BUILDKIT=1 "$c" build)
            return 0
        fi
    done
    return 1
}
install_packages() {  # apt-get install what is missing (root only)
    local missing="" pkg
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2> /dev/null | grep -q "install ok installed" \
            || missing="$missing $pkg"
    done
    [ -z "$missing" ] && return 0
    log "apt-get install:$missing"
    apt-get update -qq
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing
}
start_engine() {
    if command -v docker > /dev/null && docker info > /dev/null 2>&1; then
        log "using the running engine ($(docker version --format '{{.Server.Version}}'))"
        return 0
    fi
    if [ "$(id -u)" != 0 ]; then
        skip "no Docker engine answers (docker info) and starting one needs root; start one (or run as root) and try again"
    fi
    if ! command -v dockerd > /dev/null && ! install_packages docker.io; then
        skip "Debian's docker.io package could not be installed (apt-get install docker.io)"
    fi
    mkdir -p "$ROOT/data" "$ROOT/exec"
    local socket="$ROOT/docker.sock" old_pid
    old_pid=$(cat "$ROOT/dockerd.pid" 2> /dev/null || true)
    if [ -n "$old_pid" ] && [ "$(cat "/proc/$old_pid/comm" 2> /dev/null)" = dockerd ]; then
        # an earlier check was killed before it could stop its engine: take it over
        DOCKERD_PID=$old_pid
        export DOCKER_HOST="unix://$socket"
        log "an engine an earlier check started is still running (dockerd pid $old_pid): using it, stopping it at the end"
        return 0
    fi
    # No iptables: the engine leaves the host's firewall alone; its bridge networks then
    # connect containers to each other but not to the outside (builds use the host's).
    dockerd --data-root "$ROOT/data" --exec-root "$ROOT/exec" -H "unix://$socket" \
        --pidfile "$ROOT/dockerd.pid" --iptables=false --ip6tables=false \
        > "$ROOT/dockerd.log" 2>&1 &
    DOCKERD_PID=$!
    export DOCKER_HOST="unix://$socket"
    for _ in $(seq 60); do
        /usr/bin/docker info > /dev/null 2>&1 && break
        if ! kill -0 "$DOCKERD_PID" 2> /dev/null; then
            DOCKERD_PID=""
            tail -15 "$ROOT/dockerd.log" >&2
            skip "dockerd did not start (its log above, in full in $ROOT/dockerd.log)"
        fi
        sleep 1
    done
    /usr/bin/docker info > /dev/null 2>&1 \
        || die "dockerd (pid $DOCKERD_PID) did not answer within 60 s; see $ROOT/dockerd.log"
    log "started dockerd $(/usr/bin/docker version --format '{{.Server.Version}}') (pid $DOCKERD_PID, storage driver $(/usr/bin/docker info --format '{{.Driver}}'), data $ROOT/data)"
}
step "engine" start_engine
pick_client || die "no Docker client here builds with BuildKit: install the buildx plugin, or Debian's docker.io (apt-get install docker.io)"
bash docker/dev-tools.sh > "$WORK/dev-tools.log" 2>&1 \
    || { cat "$WORK/dev-tools.log" >&2; die "bash docker/dev-tools.sh could not install the Compose v2 CLI"; }
"$DOCKER" compose version > /dev/null 2>&1 \
    || die "'$DOCKER compose' does not run: docker/dev-tools.sh links the Compose v2 CLI into ~/.docker/cli-plugins"
log "client: $DOCKER $("$DOCKER" version --format '{{.Client.Version}}'), $("$DOCKER" compose version)"

# ---------------------------------------------------------------- 2. base image
make_base() {
    BASE_IMAGE=nft-fw-base:bookworm
    if "$DOCKER" image inspect "$BASE_IMAGE" > /dev/null 2>&1; then
        log "base image $BASE_IMAGE exists"
        return 0
    fi
    [ "$(id -u)" = 0 ] || die "making $BASE_IMAGE with debootstrap needs root; or set NFT_FW_BASE_IMAGE=python:3.11-slim-bookworm"
    install_packages debootstrap
    local rootfs="$WORK/rootfs"
    log "debootstrap --variant=minbase bookworm from $MIRROR"
    debootstrap --variant=minbase bookworm "$rootfs" "$MIRROR" > "$WORK/debootstrap.log" 2>&1 \
        || { tail -20 "$WORK/debootstrap.log" >&2; die "debootstrap failed (log above)"; }
    # The sources Debian's own bookworm images carry (the public mirror, with updates and
    # security); a build on this machine hands in this machine's sources instead.
    rm -f "$rootfs/etc/apt/sources.list"
    cat > "$rootfs/etc/apt/sources.list.d/debian.sources" << 'EOF'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -c . | "$DOCKER" import --change 'CMD ["bash"]' \
        --message "debootstrap --variant=minbase bookworm" - "$BASE_IMAGE" > /dev/null
    rm -rf "$rootfs"
}
if [ -z "$BASE_IMAGE" ]; then
    step "base image (debootstrap)" make_base
fi

# ---------------------------------------------------------------- 3. images
SECRETS=()
if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    SECRETS+=(--secret "id=apt-sources,src=/etc/apt/sources.list.d/debian.sources")
fi
pip_cert=${PIP_CERT:-$(python3 -m pip config get global.cert 2> /dev/null || true)}
pip_cert=${pip_cert:-${REQUESTS_CA_BUNDLE:-${SSL_CERT_FILE:-}}}
if [ -n "$pip_cert" ] && [ -f "$pip_cert" ]; then
    SECRETS+=(--secret "id=pip-cert,src=$pip_cert")
fi
build() {  # build TARGET
    "${BUILD[@]}" --network host --build-arg "BASE_IMAGE=$BASE_IMAGE" "${SECRETS[@]}" \
        -f docker/Dockerfile --target "$1" -t "nft-fw-$1:$TAG" . > "$WORK/build-$1.log" 2>&1 \
        || { tail -40 "$WORK/build-$1.log" >&2; die "docker build --target $1 failed (log above)"; }
}
for target in worker trainer db; do
    step "build $target" build "$target"
done
log "images: $("$DOCKER" image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep ":$TAG " | paste -sd, -) (one set of layers: db and trainer are the worker's)"
if [ -n "$DOCKERD_PID" ]; then
    # Only on the engine this check owns: drop the images earlier builds left untagged and
    # keep the build cache (GPAW's layer, pip's downloads) to 8 GB, most recent first.
    "$DOCKER" image prune -f > /dev/null
    "$DOCKER" builder prune -f --keep-storage 8GB > /dev/null
    log "engine storage: $(du -sh "$ROOT/data" | cut -f1) in $ROOT/data"
fi

# ---------------------------------------------------------------- 4. stack
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
password=$(python3 -c 'import secrets; print(secrets.token_urlsafe(18))')
cat > "$WORK/check.env" << EOF
NFT_FW_IMAGE_TAG=$TAG
NFT_FW_DB_NAME=nft_fw
NFT_FW_DB_USER=nft
NFT_FW_DB_PASSWORD=$password
MONGO_BIND=127.0.0.1
MONGO_PORT=$port
LABEL_WORKERS=2
LABEL_CATEGORY=label
JAX_EXTRA=
NFT_FW_CAMPAIGNS=$REPO/docker/check
EOF
compose() {
    "$DOCKER" compose -p "$PROJECT" --env-file "$WORK/check.env" \
        -f docker/compose.yaml -f docker/compose.embedded-db.yaml "$@"
}
up() {
    STACK_UP=1
    compose up -d --no-build > "$WORK/up.log" 2>&1 || { cat "$WORK/up.log" >&2; die "compose up failed"; }
    compose ps --format '{{.Name}} {{.Status}}'
}
step "compose up" up
in_trainer() { compose exec -T trainer "$@"; }

# ---------------------------------------------------------------- 5. campaign
run_campaign() {
    in_trainer nft-fw submit "/campaigns/$CAMPAIGN.yaml" > "$WORK/submit.log" 2>&1 \
        || { cat "$WORK/submit.log" >&2; die "nft-fw submit in the trainer container failed"; }
    local deadline=$((SECONDS + CAMPAIGN_TIMEOUT_S)) state="" fizzled=0 running=0
    while [ "$SECONDS" -lt "$deadline" ]; do
        # completed, and the report's Firework no longer RUNNING (its task marks the campaign
        # completed a moment before its worker marks the Firework COMPLETED)
        read -r state fizzled running < <(in_trainer nft-fw status "$CAMPAIGN" --json 2> "$WORK/status.err" \
            | python3 -c 'import json, sys; (c,) = json.load(sys.stdin); print(c["state"], len(c["fizzled"]), c["fireworks"].get("RUNNING", 0))' \
            2>> "$WORK/status.err" || echo unreadable 0 0)
        [ "$state" = completed ] && [ "$running" = 0 ] && return 0
        if [ "$fizzled" != 0 ]; then
            in_trainer nft-fw status "$CAMPAIGN" >&2
            die "campaign $CAMPAIGN: $fizzled Fireworks fizzled (state $state)"
        fi
        sleep 5
    done
    in_trainer nft-fw status "$CAMPAIGN" >&2 || cat "$WORK/status.err" >&2
    die "campaign $CAMPAIGN not completed within $CAMPAIGN_TIMEOUT_S s (last state: $state)"
}
step "campaign (submit to completed)" run_campaign

# ---------------------------------------------------------------- 6. checks
verify() {
    local label_hosts trainer_host
    label_hosts=$(compose ps -q label-worker | xargs "$DOCKER" inspect --format '{{.Config.Hostname}}' | paste -sd, -)
    trainer_host=$("$DOCKER" inspect --format '{{.Config.Hostname}}' "$(compose ps -q trainer)")
    [ "$(tr ',' '\n' <<< "$label_hosts" | sort -u | wc -l)" = 2 ] \
        || die "expected 2 label-worker containers with distinct host names, found '$label_hosts'"
    in_trainer python /campaigns/verify.py "$CAMPAIGN" \
        --label-hosts "$label_hosts" --trainer-host "$trainer_host" | tee "$WORK/verify.out" \
        || die "docker/check/verify.py found the problems above"
    # FireWorks' own lpad in `compose exec` finds the database through /work/my_launchpad.yaml
    local n_fws lpad_count
    n_fws=$(python3 -c 'import json, sys; print(json.loads(sys.stdin.read().rsplit("}", 1)[0] + "}")["fireworks"])' < "$WORK/verify.out")
    lpad_count=$(in_trainer lpad get_fws -d count 2> "$WORK/lpad.err" | tail -1) \
        || { cat "$WORK/lpad.err" >&2; die "lpad in the trainer container failed"; }
    [ "$lpad_count" = "$n_fws" ] \
        || die "lpad get_fws -d count in the trainer container says '$lpad_count', the database holds $n_fws Fireworks"
    log "lpad in the trainer container counts the same $n_fws Fireworks"
    in_trainer nft-fw report "$CAMPAIGN" -o /work/report > "$WORK/report.log" 2>&1 \
        || { cat "$WORK/report.log" >&2; die "nft-fw report in the trainer container failed"; }
    local pngs
    pngs=$(in_trainer sh -c 'ls /work/report/*.png | wc -l')
    [ "$pngs" -gt 0 ] || die "nft-fw report wrote no PNG into /work/report"
    log "report: $pngs PNG files in the trainer's /work/report"
    # the published port, from the host's network, with the workers' login
    printf 'NFT_FW_DB_HOST=127.0.0.1:%s\nNFT_FW_DB_PASSWORD=%s\nNFT_FW_DB_OPTIONS=directConnection=true\n' \
        "$port" "$password" > "$WORK/host.env"
    "$DOCKER" run --rm --network host --env-file "$WORK/host.env" "nft-fw-worker:$TAG" \
        nft-fw-entrypoint --ping \
        || die "the database does not answer with the workers' login on its published port 127.0.0.1:$port"
    log "the database answers on its published port 127.0.0.1:$port"
}
step "verify (database, report, port)" verify

# ---------------------------------------------------------------- 7. tear down
down() {
    compose down --volumes --remove-orphans --timeout 30 > "$WORK/down.log" 2>&1 \
        || { cat "$WORK/down.log" >&2; die "compose down failed"; }
    STACK_UP=0
    local left
    left=$("$DOCKER" ps -aq --filter "label=com.docker.compose.project=$PROJECT" | wc -l)
    [ "$left" = 0 ] || die "$left containers of $PROJECT are left after compose down"
}
step "compose down" down
if [ -n "$DOCKERD_PID" ]; then
    step "engine stop" stop_engine
fi
log "passed: images built, campaign $CAMPAIGN completed in compose and checked"
