#!/bin/sh
# What goes into the agentid image, part 2: a virtualenv at /opt/agentid with agentid installed from the wheels
# of hack/image/wheelhouse.sh only (no index), without pip or setuptools, byte-compiled (the chart runs it on a
# read-only root filesystem). Runs inside the image's root filesystem: the Dockerfile's build stage and the
# chroot of `make image`.
# Usage: hack/image/install.sh WHEEL_DIR
set -eu
wheels="$1"
python3 -m venv /opt/agentid
/opt/agentid/bin/pip install --quiet --disable-pip-version-check --no-index --only-binary=:all: \
  --find-links "${wheels}" agentid-operator
/opt/agentid/bin/pip uninstall --quiet --yes pip setuptools 2>/dev/null || /opt/agentid/bin/pip uninstall --quiet --yes pip
python3 -m compileall -q /opt/agentid
