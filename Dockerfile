# The proxy as a plain HTTP server (handlers.http) for Cloud Run, Fly.io, Railway, Alibaba
# Function Compute custom containers, Azure Container Apps, Kubernetes or a VM.
# It listens on $PORT (Cloud Run and Fly set it; 9000 otherwise, Function Compute's default).
#   docker build -t llm-proxy . && docker run -p 9000:9000 --env-file .env llm-proxy

FROM python:3.12-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY core ./core
COPY handlers ./handlers
# `speed` adds uvloop and httptools; a non-editable install puts core and handlers in
# site-packages, so the runtime image needs no source tree.
RUN pip install --no-cache-dir --prefix=/install ".[speed]"

FROM python:3.12-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOST=0.0.0.0 \
    PORT=9000
COPY --from=build /install /usr/local
# A numeric, unprivileged user: Kubernetes' runAsNonRoot can check it without /etc/passwd.
USER 10001:10001
EXPOSE 9000
CMD ["python", "-m", "handlers.http"]
