# syntax=docker/dockerfile:1
# edgeproxy: edge personalisation reverse proxy.
#
#   docker build -t edgeproxy .
#   docker run --rm -p 8000:8000 -p 9000:9000 \
#     -e EDGEPROXY_UPSTREAM=http://shop.internal:8080 \
#     -v "$PWD/slots:/srv/slots:ro" edgeproxy
#
# Any `edgeproxy serve` flag can follow the image name (e.g. --workers 4);
# every setting is also an EDGEPROXY_<KEY> variable (see deploy/edgeproxy.toml).

FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
# gcc compiles the rewriter's scanner (edgeproxy/rewrite/_scanner.pyx, Cython
# from the build requirements); only this stage has it.
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml setup.py README.md ./
COPY edgeproxy ./edgeproxy
# A wheel of the project alone (no dev/test extras), then its dependencies.
RUN pip wheel --wheel-dir /wheels . \
 && python -c "import zipfile, glob, sys; w = glob.glob('/wheels/edgeproxy-*.whl')[0]; sys.exit(0 if any('_scanner' in n and n.endswith('.so') for n in zipfile.ZipFile(w).namelist()) else 'the compiled scanner is missing from ' + w)"

FROM python:3.11-slim
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links /wheels edgeproxy \
 && groupadd --system --gid 10001 edgeproxy \
 && useradd --system --uid 10001 --gid edgeproxy --home-dir /srv --shell /usr/sbin/nologin edgeproxy \
 && mkdir -p /srv/slots /srv/logs \
 && chown -R edgeproxy:edgeproxy /srv

# The example slots, so the image starts without a volume; mount yours over
# /srv/slots (read-only is fine: the proxy only reads it).
COPY --chown=edgeproxy:edgeproxy slots /srv/slots

ENV EDGEPROXY_HOST=0.0.0.0 \
    EDGEPROXY_ADMIN_HOST=0.0.0.0 \
    EDGEPROXY_SLOTS=/srv/slots
WORKDIR /srv
USER edgeproxy:edgeproxy
VOLUME ["/srv/slots"]
# 8000: the proxied shop; 9000: admin (/metrics /healthz /readyz /dashboard).
EXPOSE 8000 9000

# The slim image has no curl: ask Python.  /healthz answers while the
# process is alive; orchestrators should use /readyz for traffic.
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:9000/healthz', timeout=2).status == 200 else 1)"]

# SIGTERM drains in-flight requests (drain_timeout, default 25 s): give the
# container at least 30 s to stop (docker stop -t 30, Kubernetes
# terminationGracePeriodSeconds).
STOPSIGNAL SIGTERM
ENTRYPOINT ["edgeproxy", "serve"]
