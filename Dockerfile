# The host as a container image: build the wheel, install it in a slim image, run `serve`.
#
#   docker build -t autogen-http-runtime .
#   docker run --rm -p 9000:9000 autogen-http-runtime [serve options, e.g. --grace 10]
#
# Settings come from AUTOGEN_HTTP_* variables or options (`docker run ... --help`).
# See docs/operations.md, "Deployment".

ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim AS build
WORKDIR /src
RUN pip install --no-cache-dir --disable-pip-version-check build
COPY pyproject.toml README.md LICENSE ./
COPY src ./src
RUN python -m build --wheel --outdir /dist

FROM python:${PYTHON_VERSION}-slim
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin autogen
COPY --from=build /dist/*.whl /tmp/
# With the [fast] extra (msgspec for the frames, uvloop for the event loop) and [cluster]
# (redis-py, for AUTOGEN_HTTP_REDIS_URL: docs/cluster.md).
RUN pip install --no-cache-dir --disable-pip-version-check "$(ls /tmp/*.whl)[fast,cluster]" && rm /tmp/*.whl
ENV AUTOGEN_HTTP_HOST=0.0.0.0 \
    AUTOGEN_HTTP_PORT=9000 \
    AUTOGEN_HTTP_LOG_FORMAT=json \
    PYTHONUNBUFFERED=1
USER 10001
EXPOSE 9000
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/healthz' % os.environ['AUTOGEN_HTTP_PORT'], timeout=2)"]
ENTRYPOINT ["autogen-http-runtime", "serve"]
