#!/usr/bin/env bash
# Build the grader image with podman or docker (whichever is here) and print its size.
#   docker/build.sh [cpu|cuda] [TAG]      (default: cpu, datitos-autograder[:cuda])
# Environment (all optional):
#   ENGINE           podman or docker (default: podman if installed, else docker)
#   BASE             base image (default: the Dockerfile's; with podman, localhost/datitos-base:bookworm when
#                    that image exists, made by docker/setup-podman.sh --base where no registry is reachable)
#   TORCH_INDEX_URL  CPU torch index (default: the Dockerfile's; where it cannot be reached and pip's
#                    find-links hold a CPU torch wheel, that wheel and pip's default index are used)
#   BUILD_ARGS       more arguments for the build
# Wheels in this machine's pip find-links folders are linked into docker/wheels/ (offered to pip first),
# and the system CA bundle and /etc/pip.conf go in as build secrets (used while building, never stored).
set -euo pipefail
cd "$(dirname "$0")/.."

variant=${1:-cpu}
case $variant in
    cpu) file=docker/Dockerfile; tag=${2:-datitos-autograder} ;;
    cuda) file=docker/Dockerfile.cuda; tag=${2:-datitos-autograder:cuda} ;;
    *) echo "usage: docker/build.sh [cpu|cuda] [TAG]" >&2; exit 2 ;;
esac
engine=${ENGINE:-$(command -v podman >/dev/null && echo podman || echo docker)}
python=${PYTHON:-$(command -v python3)}
[ -x .venv/bin/python ] && python=.venv/bin/python

args=(-f "$file" -t "$tag")
[ "$engine" = podman ] && args+=(--format docker)  # SHELL and HEALTHCHECK are not in the OCI format
ca=/etc/ssl/certs/ca-certificates.crt
[ -s "$ca" ] && args+=(--secret "id=ca,src=$ca")
[ -s /etc/pip.conf ] && args+=(--secret "id=pipconf,src=/etc/pip.conf")

# Local wheels: whatever pip's find-links name on this machine.
links=$("$python" -m pip config list 2>/dev/null | sed -n "s/^[^=]*find-links='\(.*\)'$/\1/p"
       echo "${PIP_FIND_LINKS:-}")
for dir in $links; do
    [ -d "$dir" ] || continue
    for wheel in "$dir"/*.whl; do
        [ -e "$wheel" ] && { ln -f "$wheel" docker/wheels/ 2>/dev/null || cp -f "$wheel" docker/wheels/; }
    done
done

if [ -z "${BASE:-}" ] && [ "$engine" = podman ] && podman image exists localhost/datitos-base:bookworm; then
    BASE=localhost/datitos-base:bookworm
fi
[ -n "${BASE:-}" ] && args+=(--build-arg "BASE=$BASE")

if [ -z "${TORCH_INDEX_URL+set}" ]; then
    default=$(sed -n 's/^ARG TORCH_INDEX_URL=//p' "$file")
    if ! "$python" -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=10)" "$default/" \
            >/dev/null 2>&1; then
        wheel=$(find docker/wheels -name 'torch-*+cpu-*.whl' | sort -V | tail -1)
        if [ "$variant" = cuda ]; then  # pip's default index: its Linux torch wheels are CUDA builds
            echo "build: $default cannot be reached; using pip's default index" >&2
            args+=(--build-arg "TORCH_INDEX_URL=")
        elif [ -n "$wheel" ]; then  # a local CPU wheel, with the torchvision of its release from pip's index
            version=$(basename "$wheel" | cut -d- -f2)  # 2.13.0+cpu
            IFS=. read -r _ minor _ <<< "${version%%+*}"
            echo "build: $default cannot be reached; using $(basename "$wheel")" >&2
            args+=(--build-arg "TORCH_INDEX_URL="
                   --build-arg "TORCH_SPEC=torch==$version torchvision==0.$((minor + 15)).*")
        fi
    fi
elif [ -n "$TORCH_INDEX_URL" ]; then
    args+=(--build-arg "TORCH_INDEX_URL=$TORCH_INDEX_URL")
fi

# shellcheck disable=SC2086  # BUILD_ARGS: several words
set -x
"$engine" build "${args[@]}" ${BUILD_ARGS:-} .
{ set +x; } 2>/dev/null
"$engine" image inspect --format "{{.Size}}" "$tag" | awk -v t="$tag" '{printf "%s: %.0f MB\n", t, $1 / 1e6}'
