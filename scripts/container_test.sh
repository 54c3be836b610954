#!/usr/bin/env bash
# Build the bids_brainage image and run it the way the bids-apps organisation's CI runs its
# apps: read-only root filesystem, no network, user 1000, the input mounted read-only.
# Debian 12 as root, no Docker engine: podman (Debian packages), a base image bootstrapped
# with mmdebstrap (Docker Hub is out of reach), pip reaching PyPI through the host's TLS set-up.
#
#   bash scripts/container_test.sh            # from the repository root; ../shared beside it
#
# Environment: IMAGE (default bids_brainage:<version>), KEEP=1 keeps the work folder,
# CONTAINER_TEST_DIR (default: a new temporary folder).
# Stops only what it starts (the podman API service, by its recorded PID).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
IXI=$ROOT/../shared/data/ixi-hh-2mm
VERSION=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' bids_brainage/__about__.py)
IMAGE=${IMAGE:-bids_brainage:$VERSION}
BASE=localhost/python:3.11-slim-bookworm
WORK=${CONTAINER_TEST_DIR:-$(mktemp -d /tmp/container_test.XXXXXX)}
mkdir -p "$WORK"
# mktemp makes the folder 0700; the image runs as user 1000 and bosh's job script lies in it
chmod 755 "$WORK"
SERVICE_PID=
remove_build_leftovers() {
    # What a test build leaves: its build stages (labelled in the Dockerfile) and, when a step
    # failed, buildah's working containers on them. Only ours: the label picks them.
    local id image key=org.bids_brainage.stage
    command -v podman > /dev/null || return 0
    podman ps --all --external --format '{{.ID}} {{.ImageID}}' 2> /dev/null | while read -r id image; do
        if podman image inspect --format "{{index .Labels \"$key\"}}" "$image" \
            2> /dev/null | grep -qx build; then
            podman rm --force "$id" > /dev/null 2>&1 || true
        fi
    done
    podman image prune --all --force --filter "label=$key=build" > /dev/null 2>&1 || true
}
cleanup() {
    if [ -n "$SERVICE_PID" ]; then kill "$SERVICE_PID" 2> /dev/null || true; fi
    remove_build_leftovers
    if [ "${KEEP:-0}" != 1 ]; then rm -rf "$WORK"; fi
}
trap cleanup EXIT
say() { echo "container_test: $*"; }
fail() { echo "container_test: FAILED: $*" >&2; exit 1; }
seconds() { echo $(( $(date +%s) - $1 )); }

# --- what it needs ----------------------------------------------------------------------------
need=()
for pair in podman:podman runc:runc mmdebstrap:mmdebstrap newuidmap:uidmap docker:podman-docker; do
    command -v "${pair%%:*}" > /dev/null || need+=("${pair#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
    say "installing ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" > /dev/null
fi
# crun 1.8 refuses the host's hybrid cgroups; the default ulimits are refused too
cat > "$WORK/containers.conf" << 'EOF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
export CONTAINERS_CONF=$WORK/containers.conf
mkdir -p /etc/containers && touch /etc/containers/nodocker  # podman-docker's notice off

# --- room to build: a failed earlier build can have left gigabytes; then the disk must hold it ---
remove_build_leftovers
NEED_GB=${CONTAINER_TEST_NEED_GB:-12}  # a cold build peaked at 10 GB on disk (docs/benchmarks.md)
storage=$(podman info --format '{{.Store.GraphRoot}}')
free_gb=$(( $(df --output=avail -k "$storage" | tail -1) / 1048576 ))
[ "$free_gb" -ge "$NEED_GB" ] \
    || fail "$storage has $free_gb GB free; building the image needs about $NEED_GB GB"

# --- base image: Debian 12 minbase with Python 3.11 --------------------------------------------
if ! podman image exists "$BASE"; then
    start=$(date +%s)
    # no manuals, translations or docs (licences kept): 30+ MB less in every image
    mmdebstrap --quiet --variant=minbase --dpkgopt=path-exclude=/usr/share/man/* \
        --dpkgopt=path-exclude=/usr/share/locale/* --dpkgopt=path-exclude=/usr/share/doc/* \
        --dpkgopt=path-include=/usr/share/doc/*/copyright \
        --include=python3,python3-venv,python-is-python3,ca-certificates bookworm \
        "$WORK/rootfs.tar" "deb http://deb.debian.org/debian bookworm main" \
        "deb http://deb.debian.org/debian-security bookworm-security main"
    podman import --quiet \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' "$WORK/rootfs.tar" "$BASE" > /dev/null
    rm -f "$WORK/rootfs.tar"
    say "base image bootstrapped in $(seconds "$start") s"
fi

# --- build ------------------------------------------------------------------------------------
# pip inside the build sees the host's CA bundle and the folder holding the CPU torch wheel.
CA=$(python3 -m pip config get global.cert 2> /dev/null || echo /etc/ssl/certs/ca-certificates.crt)
WHEELS=/opt/wheels
printf '[global]\ncert = /etc/ssl/certs/host-ca.crt\nfind-links = /opt/wheels\n' > "$WORK/pip.conf"
mounts=(-v "$CA:/etc/ssl/certs/host-ca.crt:ro" -v "$WORK/pip.conf:/etc/pip.conf:ro")
torch_index=https://download.pytorch.org/whl/cpu
if ls "$WHEELS"/torch-*+cpu-*.whl > /dev/null 2>&1; then
    mounts+=(-v "$WHEELS:/opt/wheels:ro")
    torch_index=https://pypi.org/simple  # the local CPU wheel wins: its +cpu version sorts last
fi
replaced=$(podman image inspect --format '{{.Id}}' "$IMAGE" 2> /dev/null || true)
start=$(date +%s)
podman build --quiet --force-rm --network host "${mounts[@]}" \
    --build-arg BASE_IMAGE="$BASE" --build-arg PREFETCH_TEMPLATES=0 \
    --build-arg TORCH_INDEX_URL="$torch_index" -t "$IMAGE" . > /dev/null
build_s=$(seconds "$start")
# What this build leaves behind: its build stages and the image it untagged. Left there, every
# test build kept 1.5-3 GB, and a disk filled by earlier builds failed a later one.
remove_build_leftovers
if [ -n "$replaced" ] && [ "$replaced" != "$(podman image inspect --format '{{.Id}}' "$IMAGE")" ]; then
    podman rmi "$replaced" > /dev/null 2>&1 || true
fi
size_mb=$(( $(podman image inspect --format '{{.Size}}' "$IMAGE") / 1000000 ))
say "image $IMAGE built in $build_s s, $size_mb MB"

# --- run it as the bids-apps CI does -------------------------------------------------------------
run() {  # run IMAGE ARGS... with the bids-apps CI's restrictions
    podman run --rm --read-only --network none --user 1000 \
        -v "$WORK/bids:/data:ro" -v "$WORK/out:/out" "$@"
}
mkdir -p "$WORK/bids" "$WORK/out"
[ "$(run "$IMAGE" --version)" = "bids_brainage $VERSION" ] || fail "--version"
say "--version: bids_brainage $VERSION"
labels=(IXI012 IXI014)
cp "$IXI/dataset_description.json" "$WORK/bids/"
head -1 "$IXI/participants.tsv" > "$WORK/bids/participants.tsv"
for label in "${labels[@]}"; do
    cp -r "$IXI/sub-$label" "$WORK/bids/"
    grep -P "^sub-$label\t" "$IXI/participants.tsv" >> "$WORK/bids/participants.tsv"
done
chmod -R a+rX "$WORK/bids"
chmod 777 "$WORK/out"
checksum() { (cd "$WORK/bids" && find . -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum); }
before=$(checksum)

for label in "${labels[@]}"; do
    start=$(date +%s)
    run "$IMAGE" /data /out participant --participant-label "$label" -w /tmp/work --nprocs 2 \
        || fail "participant $label"
    say "participant $label: rc 0 in $(seconds "$start") s"
done
start=$(date +%s)
run "$IMAGE" /data /out group -w /tmp/work || fail "group"
say "group: rc 0 in $(seconds "$start") s"
for file in group/group_scans.tsv group.html; do
    [ -s "$WORK/out/$file" ] || fail "group wrote no $file"
done
rows=$(($(wc -l < "$WORK/out/group/group_scans.tsv") - 1))
[ "$rows" -eq ${#labels[@]} ] || fail "group/group_scans.tsv has $rows rows, not ${#labels[@]}"

errors=$(run --entrypoint python "$IMAGE" -c \
    'from bids_brainage.utils.bids import run_bids_validator; print(len(run_bids_validator("/out")))')
[ "$errors" = 0 ] || fail "the BIDS validator found $errors errors in the derivatives"
say "validator on the derivatives: 0 errors"
[ "$(checksum)" = "$before" ] || fail "BIDS_DIR changed"
say "BIDS_DIR checksum unchanged"

# --- an OUTPUT_DIR that user 1000 cannot write: one line, no traceback ------------------------
mkdir -p "$WORK/locked" && chmod 755 "$WORK/locked"
set +e
podman run --rm --read-only --network none --user 1000 -v "$WORK/bids:/data:ro" \
    -v "$WORK/locked:/out" "$IMAGE" /data /out participant > "$WORK/locked.log" 2>&1
code=$?
set -e
[ "$code" -ne 0 ] || fail "an unwritable /out was accepted"
grep -q Traceback "$WORK/locked.log" && fail "an unwritable /out gave a traceback"
[ "$(wc -l < "$WORK/locked.log")" -eq 1 ] || fail "an unwritable /out gave more than one line"
say "unwritable /out: rc $code, one line: $(cat "$WORK/locked.log")"

# --- the Boutiques descriptor, for real, through the Docker API of podman ----------------------
sock_dir=$WORK/podman-sock
mkdir -p "$sock_dir"
podman system service --time=0 "unix://$sock_dir/podman.sock" > "$WORK/service.log" 2>&1 &
SERVICE_PID=$!
export DOCKER_HOST=unix://$sock_dir/podman.sock
# the service can take many seconds to answer on a loaded machine: wait for its ping
for _ in $(seq 240); do
    curl -sf --unix-socket "$sock_dir/podman.sock" http://d/_ping > /dev/null 2>&1 && break
    sleep 0.5
done
curl -sf --unix-socket "$sock_dir/podman.sock" http://d/_ping > /dev/null \
    || fail "the podman API service did not answer on $sock_dir/podman.sock"
descriptor_image=$(python3 -c 'import json; print(json.load(open("bids_app_spec.json"))["container-image"]["image"])')
podman tag "$IMAGE" "$descriptor_image"
mkdir -p "$WORK/bosh_out" && chmod 777 "$WORK/bosh_out"
cat > "$WORK/invocation.json" << EOF
{"bids_dir": "$WORK/bids", "output_dir": "$WORK/bosh_out", "analysis_level": "participant",
 "participant_label": ["${labels[0]}"], "work_dir": "/tmp/work", "nprocs": 2}
EOF
start=$(date +%s)
(cd "$WORK" && umask 022 && "$ROOT/.venv/bin/bosh" exec launch "$ROOT/bids_app_spec.json" invocation.json \
    > bosh.log 2>&1) || { tail -20 "$WORK/bosh.log"; fail "bosh exec launch"; }
[ -s "$WORK/bosh_out/sub-${labels[0]}/anat/sub-${labels[0]}_brainage.tsv" ] \
    || { tail -40 "$WORK/bosh.log"; fail "bosh exec launch wrote no brain-age table"; }
say "bosh exec launch: rc 0 in $(seconds "$start") s"

# --- the input of singularity build on a cluster ------------------------------------------------
start=$(date +%s)
podman save --quiet --format docker-archive -o "$WORK/bids_brainage.tar" "$IMAGE"
say "docker-archive for 'singularity build bids_brainage.sif docker-archive://...':" \
    "$(( $(stat -c %s "$WORK/bids_brainage.tar") / 1000000 )) MB in $(seconds "$start") s"
say "all checks passed"
