#!/usr/bin/env bash
# Make podman able to build and run the grader's images on this machine (Debian, as root).
# Idempotent: installs what is missing and edits /etc/containers/containers.conf only when a
# needed setting is absent. Exit 0 when podman runs a container afterwards; exit 2 (and say why)
# when it cannot be set up here (not root, no apt-get, no podman after installing).
#   docker/setup-podman.sh            podman, runc, debootstrap and the settings
#   docker/setup-podman.sh --base     also the base image localhost/datitos-base (debootstrap, cached)
set -euo pipefail

BASE_IMAGE=${BASE_IMAGE:-localhost/datitos-base:bookworm}
CONF=${CONF:-/etc/containers/containers.conf}

say() { echo "setup-podman: $*" >&2; }
cannot() { say "$*"; exit 2; }

need=()
for tool in podman runc debootstrap; do command -v "$tool" >/dev/null || need+=("$tool"); done
if ((${#need[@]})); then
    [ "$(id -u)" = 0 ] || cannot "missing ${need[*]} and not root (cannot apt-get install)"
    command -v apt-get >/dev/null || cannot "missing ${need[*]} and no apt-get"
    say "installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq "${need[@]}" >/dev/null 2>&1 || \
        { apt-get update -qq >/dev/null && apt-get install -y -qq "${need[@]}" >/dev/null; } || \
        cannot "apt-get install ${need[*]} failed"
fi

# ensure SECTION KEY LINE: add LINE under [SECTION] unless KEY is already set there.
ensure() {
    local section=$1 key=$2 line=$3
    if [ -f "$CONF" ] && awk -v s="[$section]" -v k="$key" '
            /^[[:space:]]*\[/ { here = ($1 == s) }
            here && $1 == k { found = 1 } END { exit !found }' "$CONF"; then
        return
    fi
    [ -w "$(dirname "$CONF")" ] || [ -w "$CONF" ] || cannot "$CONF needs '$line' under [$section] (not writable)"
    say "setting $line under [$section] in $CONF"
    if [ -f "$CONF" ] && grep -q "^\[$section\]" "$CONF"; then
        sed -i "/^\[$section\]/a $line" "$CONF"
    else
        printf '\n[%s]\n%s\n' "$section" "$line" >> "$CONF"
    fi
}
# crun is not what Debian's podman 4.3 runs well in a VM like this one; and without explicit ulimits
# every container fails to start (the host's nofile hard limit is above what runc may set).
mkdir -p "$(dirname "$CONF")"
ensure engine runtime 'runtime = "runc"'
ensure containers default_ulimits 'default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]'

if [ "${1:-}" = --base ]; then
    if podman image exists "$BASE_IMAGE"; then
        say "base image $BASE_IMAGE already there"
    else
        # No registry here: a minimal Debian made with debootstrap stands in for debian:bookworm-slim.
        root=$(mktemp -d)
        trap 'rm -rf "$root"' EXIT
        say "debootstrap --variant=minbase bookworm (a few minutes)"
        # shellcheck disable=SC2086  # DEBIAN_MIRROR: empty for debootstrap's default mirror
        debootstrap --variant=minbase bookworm "$root" ${DEBIAN_MIRROR:-} >/dev/null || cannot "debootstrap failed"
        rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
        tar -C "$root" -c . | podman import --change 'CMD ["/bin/bash"]' - "$BASE_IMAGE" >/dev/null
        say "imported $BASE_IMAGE"
    fi
fi

podman info >/dev/null 2>&1 || cannot "podman is installed but does not run here: $(podman info 2>&1 | tail -1)"
