#!/bin/sh
# What goes into the agentid image, part 1: the project's wheel and the wheels of all its dependencies, for
# CPython 3.11 on glibc >= 2.36 (Debian bookworm and newer), binary only: nothing is compiled in the image.
# Used by the Dockerfile and by `make image` (agentid.devcluster.images), so the two images hold the same thing.
# Usage: hack/image/wheelhouse.sh OUT_DIR   (run from the repository root; PYTHON names the interpreter with pip)
set -eu
out="$1"
python="${PYTHON:-python3}"
mkdir -p "${out}"
# A release pins every package to what its SBOM lists (dist/image-requirements.txt, written by `make release`;
# the Dockerfile copies it next to pyproject.toml); a development build takes the newest allowed versions.
constraints=""
for pins in image-requirements.txt dist/image-requirements.txt; do
  if [ -f "${pins}" ]; then constraints="--constraint ${pins}"; break; fi
done
"${python}" -m pip wheel --quiet --disable-pip-version-check --no-deps --wheel-dir "${out}" .
# Every manylinux tag up to glibc 2.36 (older pips do not expand one tag into the older ones themselves).
platforms=""
for glibc in 2_17 2_24 2_26 2_27 2_28 2_31 2_34 2_35 2_36; do
  platforms="${platforms} --platform manylinux_${glibc}_$(uname -m)"
done
# shellcheck disable=SC2086
"${python}" -m pip download --quiet --disable-pip-version-check --only-binary=:all: \
  --python-version 3.11 --implementation cp --abi cp311 --abi abi3 --abi none ${platforms} \
  ${constraints} --dest "${out}" "${out}"/agentid_operator-*.whl
