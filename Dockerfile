# syntax=docker/dockerfile:1
# agentid: the operator (`agentid run`) and the token service (`agentid serve`) in one image.
#   docker build -t agentid:0.1.0 .           (after `make release`: the image gets exactly the SBOM's packages)
# Pin the base by digest in release pipelines: --build-arg PYTHON_IMAGE=python:3.11.14-slim-trixie@sha256:<digest>
ARG PYTHON_IMAGE=python:3.11.14-slim-trixie

# -- build: a virtualenv with agentid and its dependencies (all from wheels: nothing is compiled) -----------------
# hack/image/ is the one definition of what goes into the image; `make image` (no Docker) runs the same scripts.
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# dist/image-requirements.txt (written by `make release`, when present) pins every Python package to what the
# release's SBOM lists; without it (a development build) pip resolves the newest allowed versions.
COPY pyproject.toml README.md LICENSE dist/image-requirements.tx[t] ./
COPY operator ./operator
COPY hack/image ./hack/image
RUN sh hack/image/wheelhouse.sh /wheels \
 && sh hack/image/install.sh /wheels

# -- runtime: the virtualenv on a clean base; no compilers, no pip in the venv, no shell tools added ---------------
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="agentid" \
      org.opencontainers.image.description="Kubernetes operator giving every AI agent its own identity" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /opt/agentid /opt/agentid
ENV PATH=/opt/agentid/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# 65532: the conventional "nonroot" UID; the chart runs as it with a read-only root filesystem.
USER 65532:65532
WORKDIR /tmp
EXPOSE 8080 8443 9090 9443
ENTRYPOINT ["agentid"]
CMD ["run", "--all-namespaces"]
