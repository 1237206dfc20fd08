# Images of the project, one Dockerfile with two final targets (see the README, "Images"):
#
#   control  the operator and the router: the base install, no torch      ghcr.io/hadis-serving/hadis
#   worker   a Triton server (PyTriton) around diffusers pipelines:       ghcr.io/hadis-serving/hadis-worker
#            the CUDA build of torch on GPU nodes, the tiny variants on CPU
#
#   docker build --target control -t ghcr.io/hadis-serving/hadis:0.1.0 .
#   docker build --target worker  -t ghcr.io/hadis-serving/hadis-worker:0.1.0 .
#
# `make images` builds both here, where no registry is reachable: it makes BASE_IMAGE itself with
# debootstrap from Debian's packages and passes the machine's CA bundle to pip as a build secret.
# Dependencies are installed before the source is copied, and pip's cache is a BuildKit cache
# mount, so a change to the code never downloads torch again.
ARG BASE_IMAGE=debian:bookworm-slim

# ---- the interpreter, shared by every stage (the venvs point at /usr/bin/python3) ----
FROM ${BASE_IMAGE} AS python
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 libpython3.11 ca-certificates \
    && rm -rf /var/lib/apt/lists/*

# ---- build stage: pip and venv tooling, never in a final image ----
FROM python AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3-venv python3-pip \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src

# requirements-<target>.txt: the project's dependencies (plus the worker extra), from pyproject.toml;
# /wheels/pip-*.whl: a pip that the final stages run from the wheel, so no pip stays in them.
# Only pyproject.toml reaches this stage: the dependency layers depend on nothing else.
FROM build AS reqs
COPY pyproject.toml ./
RUN python3 -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
open('requirements-control.txt', 'w').write('\n'.join(p['dependencies'])); \
open('requirements-worker.txt', 'w').write('\n'.join(p['dependencies'] + p['optional-dependencies']['worker']))"
RUN --mount=type=cache,target=/root/.cache/pip --mount=type=secret,id=ca \
    export PIP_CACHE_DIR=/root/.cache/pip; if [ -s /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca; fi; \
    python3 -m pip download --no-deps --dest /wheels pip
# The project itself, in a prefix of its own: a code change rebuilds a layer of a few MB, not
# the multi-GB dependency layer of the worker image.
FROM build AS app
RUN --mount=type=cache,target=/root/.cache/pip --mount=type=secret,id=ca \
    export PIP_CACHE_DIR=/root/.cache/pip; if [ -s /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca; fi; \
    python3 -m venv /opt/hadis && /opt/hadis/bin/pip install "setuptools>=77" wheel
# README.md is only the package's long description: an empty one keeps doc edits from changing
# the image (and from a multi-GB re-import into a node).
COPY pyproject.toml LICENSE ./
COPY src ./src
RUN touch README.md
RUN /opt/hadis/bin/pip install --no-deps --no-build-isolation --no-compile --prefix=/opt/hadis-app . \
    && /opt/hadis/bin/python -m compileall -q /opt/hadis-app

# ---- final stages: the interpreter, one venv, the project and a non-root user with a passwd entry ----
FROM python AS runtime
ARG VERSION=0.1.0
LABEL org.opencontainers.image.source="https://github.com/hadis-serving/hadis" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="hadis-serving"
# kopf and torch look the user up (getpwuid); a UID without an entry crashes them.
RUN groupadd --system --gid 65532 hadis \
    && useradd --system --uid 65532 --gid 65532 --home-dir /home/hadis --create-home --shell /usr/sbin/nologin hadis
# Everything written at run time goes to /tmp (an emptyDir in the pods), so the root
# filesystem can be read-only.
ENV PATH=/opt/hadis-app/bin:/opt/hadis/bin:$PATH PYTHONPATH=/opt/hadis-app/lib/python3.11/site-packages \
    PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/home/hadis XDG_CACHE_HOME=/tmp/.cache MPLCONFIGDIR=/tmp/matplotlib
WORKDIR /home/hadis
ENTRYPOINT ["hadis"]
CMD ["--help"]

# The dependencies are installed in the final stage itself (pip run from its wheel, cache and CA
# as mounts): copying a venv from a build stage would keep a second multi-GB copy in the cache.
FROM runtime AS worker
LABEL org.opencontainers.image.title="hadis-worker" \
      org.opencontainers.image.description="HADIS worker: diffusers pipelines behind a Triton server (PyTriton)"
RUN --mount=type=bind,from=reqs,source=/src/requirements-worker.txt,target=/build/requirements.txt --mount=type=bind,from=reqs,source=/wheels,target=/wheels \
    --mount=type=cache,target=/root/.cache/pip --mount=type=secret,id=ca \
    export PIP_CACHE_DIR=/root/.cache/pip; if [ -s /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca; fi; \
    python3 -m venv --without-pip /opt/hadis \
    && set -- /wheels/pip-*.whl && python3 "$1/pip" --python /opt/hadis/bin/python install -r /build/requirements.txt
# PyTriton's Python-backend stub links the system libpython; point it at this interpreter's.
ENV LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu HF_HOME=/models/hf
COPY --from=app /opt/hadis-app /opt/hadis-app
USER 65532:65532

FROM runtime AS control
LABEL org.opencontainers.image.title="hadis" \
      org.opencontainers.image.description="HADIS operator and router (no torch)"
RUN --mount=type=bind,from=reqs,source=/src/requirements-control.txt,target=/build/requirements.txt --mount=type=bind,from=reqs,source=/wheels,target=/wheels \
    --mount=type=cache,target=/root/.cache/pip --mount=type=secret,id=ca \
    export PIP_CACHE_DIR=/root/.cache/pip; if [ -s /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca; fi; \
    python3 -m venv --without-pip /opt/hadis \
    && set -- /wheels/pip-*.whl && python3 "$1/pip" --python /opt/hadis/bin/python install -r /build/requirements.txt
COPY --from=app /opt/hadis-app /opt/hadis-app
USER 65532:65532
