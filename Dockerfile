# bulkcancel as a container for Cloud Run Jobs, Kubernetes Jobs/CronJobs and CI.
#   docker build -t us-docker.pkg.dev/PROJECT_ID/tools/bulkcancel:0.1.0 .
#   docker run --rm us-docker.pkg.dev/PROJECT_ID/tools/bulkcancel:0.1.0 cancel --help
# The manifests in examples/ run this image by that name. Credentials come from the platform
# (the metadata server: Cloud Run's or GKE Workload Identity's service account), never baked in.

FROM python:3.12-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bulkcancel ./bulkcancel
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.12-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links=/wheels bulkcancel \
    && rm -rf /wheels \
    && useradd --system --uid 10001 --user-group --create-home --home-dir /home/bulkcancel bulkcancel
# Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
WORKDIR /home/bulkcancel
ENTRYPOINT ["bulkcancel"]
CMD ["--help"]
