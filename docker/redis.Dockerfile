# A Redis 7 image for machines that cannot pull the official redis:7 image.
# Built by scripts/ci-docker.sh on the local Debian bookworm base (redis-server 7.0 from Debian):
#   DOCKER_BUILDKIT=0 docker build --build-arg BASE_IMAGE=taskqueue-base:bookworm -t taskqueue-redis:7 - < docker/redis.Dockerfile
# It behaves like the official image for what docker-compose.yml uses: `redis-server ARGS...`
# as the command, data in /data (a volume), `redis-cli ping` for the health check.
ARG BASE_IMAGE=taskqueue-base:bookworm
FROM ${BASE_IMAGE}
RUN set -eu; \
    command -v redis-server >/dev/null; \
    mkdir -p /data; \
    chown redis:redis /data
VOLUME /data
WORKDIR /data
USER redis
EXPOSE 6379
# Without a config file redis-server enables protected mode, which refuses clients from other
# containers; the official image turns it off the same way. Do not publish this port publicly.
# noeviction: at a memory limit Redis refuses new writes instead of deleting task records.
CMD ["redis-server", "--protected-mode", "no", "--dir", "/data", "--maxmemory-policy", "noeviction"]
