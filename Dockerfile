# bids_brainage BIDS-App image.
#   docker build -t bids_brainage:0.1.0 .
#   docker run --rm -v /data/bids:/data:ro -v /data/out:/out bids_brainage:0.1.0 /data /out participant

# --- build: a virtual environment with the app and its dependencies -----------------------------
FROM python:3.11-slim-bookworm AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
# The CPU build of torch; PyPI's default torch wheel carries several GB of CUDA libraries.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN pip install --index-url "${TORCH_INDEX_URL}" torch==2.13.0
COPY pyproject.toml README.md /src/
COPY bids_brainage /src/bids_brainage
RUN pip install /src

# --- templates: baked in at build time so the app never downloads at run time -------------------
FROM builder AS templates
ENV TEMPLATEFLOW_HOME=/opt/templateflow
RUN python -m bids_brainage.utils.templates MNI152NLin2009cAsym

# --- runtime ---------------------------------------------------------------------------------------
FROM python:3.11-slim-bookworm
LABEL org.opencontainers.image.title="bids_brainage" \
      org.opencontainers.image.description="BIDS-App: brain age from T1-weighted MRI" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /opt/venv /opt/venv
COPY --from=templates /opt/templateflow /opt/templateflow
RUN useradd --create-home --uid 1000 --shell /bin/bash brainage
ENV PATH=/opt/venv/bin:$PATH \
    TEMPLATEFLOW_HOME=/opt/templateflow \
    TEMPLATEFLOW_AUTOUPDATE=0 \
    NIPYPE_NO_ET=1 \
    MPLCONFIGDIR=/tmp/matplotlib \
    DENO_DIR=/tmp/deno \
    BIDS_BRAINAGE_CONTAINER=docker \
    HOME=/home/brainage
USER 1000
WORKDIR /home/brainage
ENTRYPOINT ["bids_brainage"]
