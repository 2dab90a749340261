#!/bin/sh
# The last build step of every sandbox image, written once (each runtime-images/<group>/
# Dockerfile runs it right after copying the executor):
#
#   RUN sh /opt/k8si/build/finish-sandbox.sh <language>... [check-toolchains options]
#
# the unprivileged sandbox user (uid/gid 65532, the pod template's runAsUser/runAsGroup)
# and its work dir, the executor compiled, the named languages proven to build and run
# with the executor's own environment (check-toolchains.py), then every setuid/setgid
# bit and file capability stripped (harden.py) and the build helpers removed. Nothing
# may be added to an image after this step.
set -eux
groupadd --system --gid 65532 sandbox
useradd --system --uid 65532 --gid 65532 --home-dir /tmp --no-create-home \
        --shell /usr/sbin/nologin sandbox
install -d -o 65532 -g 65532 -m 0700 /mnt/data
find /opt/k8si -name __pycache__ -prune -exec rm -rf {} +
python3 -m compileall -q /opt/k8si/sidecar
PYTHONPATH=/opt/k8si python3 /opt/k8si/build/check-toolchains.py "$@"
python3 /opt/k8si/build/harden.py /
rm -rf /opt/k8si/build /tmp/* /root/.cache
