#!/usr/bin/env bash
# Builds (and with --push, pushes) every image with docker buildx bake, from the
# repository root whatever the current directory. Arguments go to bake, e.g.:
#   runtime-images/build.sh                       # all images, into the build cache
#   runtime-images/build.sh --load runtime-python # one image, into the local docker
#   REGISTRY=registry.example.com/k8si TAG=0.1.0 runtime-images/build.sh --push
set -euo pipefail
cd "$(dirname "$0")/.."
exec docker buildx bake -f runtime-images/docker-bake.hcl "$@"
