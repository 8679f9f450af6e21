# Redis for clusters that cannot pull redis:7.4 (tests/e2e/kind/redis_image.py): Debian's
# redis-server (and redis-cli, for the chart's probes) on the suite's base image.
ARG BASE_IMAGE=python:3.12-slim
FROM ${BASE_IMAGE}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /data && chown 999:999 /data
WORKDIR /data
USER 999:999
CMD ["redis-server"]
