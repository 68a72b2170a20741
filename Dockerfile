# syntax=docker/dockerfile:1
# One image for every role: `iris-scorer serve|worker|backfill|train|broker` (and `mlflow server`).
#   docker build -t iris-scorer .
#   docker run --rm -p 8000:8000 iris-scorer                      # REST on :8000
#   docker run --rm iris-scorer worker --http-host 0.0.0.0        # worker, HTTP on :8001
# ---------------------------------------------------------------- builder: compilers allowed here
FROM python:3.11.14-slim-bookworm AS builder
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
WORKDIR /src
# requirements.lock pins runtime + dev tools; the dev-only names (pytest, ruff, mypy, ...) are
# dropped here and `pip check` proves that nothing the runtime needs went with them.
COPY requirements.lock ./
COPY deploy/docker/dev-only-packages.txt ./
RUN grep -viE "^($(paste -sd'|' dev-only-packages.txt))==" requirements.lock > requirements.runtime.txt \
    && pip install --no-cache-dir -r requirements.runtime.txt
COPY pyproject.toml README.md ./
COPY ml ./ml
COPY app ./app
COPY consumers ./consumers
COPY iris_scorer ./iris_scorer
RUN pip install --no-cache-dir --no-deps --no-build-isolation . && pip check

# ---------------------------------------------------------------- runtime: no compilers, non-root
# Same base tag as the builder, so the venv's interpreter path and ABI match.
FROM python:3.11.14-slim-bookworm AS runtime
LABEL org.opencontainers.image.title="iris-scorer" \
      org.opencontainers.image.description="Event-driven batch-and-stream scorer for the Iris classifier" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    HEALTHCHECK_PORT=8000
RUN groupadd --system --gid 10001 iris \
    && useradd --system --uid 10001 --gid iris --home-dir /app --shell /usr/sbin/nologin iris \
    && mkdir -p /app/reports /app/data /app/.dvc /var/lib/mlflow \
    && chown -R 10001:10001 /app /var/lib/mlflow
COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
# The DVC pipeline (for `iris-scorer train`): dvc.yaml lists ml/*.py as dependencies, so the
# sources are here too. There is no .git in the image: DVC runs with core.no_scm.
COPY --chown=10001:10001 dvc.yaml params.yaml ./
COPY --chown=10001:10001 ml ./ml
COPY --chown=10001:10001 .dvc/config ./.dvc/config
RUN printf '[core]\n    no_scm = true\n' > .dvc/config.local && chown 10001:10001 .dvc/config.local
# Drift reports (IRIS_REPORTS_DIR=reports) and the training outputs are the only writes besides
# /tmp; Kubernetes mounts emptyDirs there and keeps the root filesystem read-only.
VOLUME ["/app/reports"]
USER 10001:10001
EXPOSE 8000 8001
# One image, several roles: HEALTHCHECK_PORT=8001 for the worker, 5000 for `mlflow server`.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('HEALTHCHECK_PORT', '8000') + '/health', timeout=4)"]
ENTRYPOINT ["iris-scorer"]
CMD ["serve", "--host", "0.0.0.0"]

# ---------------------------------------------------------------- MLflow server on Azure
# `docker build --target mlflow-server`: the runtime plus the PostgreSQL driver and the Blob
# Storage client that `mlflow server` needs for a PostgreSQL backend and wasbs:// artifacts.
FROM runtime AS mlflow-server
USER 0:0
RUN pip install --no-cache-dir psycopg2-binary==2.9.13 azure-storage-blob==12.31.1 azure-identity==1.27.0
USER 10001:10001
ENV HEALTHCHECK_PORT=5000 \
    MLFLOW_HOST=0.0.0.0 \
    MLFLOW_PORT=5000
ENTRYPOINT ["mlflow"]
CMD ["server"]

# ---------------------------------------------------------------- Spark backfill
# `docker build --target spark -t iris-scorer-spark .`: the runtime plus a Java 17 runtime and
# PySpark (the lock's pins), for `backfill --engine spark` and deploy/k8s/jobs/spark. The default
# image does not carry them (about 450 MB more; deploy/docker/dev-only-packages.txt drops them).
FROM runtime AS spark
USER 0:0
RUN apt-get update \
    && apt-get install -y --no-install-recommends openjdk-17-jre-headless=17.* \
    && rm -rf /var/lib/apt/lists/* \
    && pip install --no-cache-dir pyspark==4.0.1 py4j==0.10.9.9
USER 10001:10001
ENTRYPOINT ["iris-scorer"]
CMD ["backfill", "--help"]

# ---------------------------------------------------------------- default target: the scorer
FROM runtime AS iris-scorer
