"""Health check: readiness, exit 0 when this host's worker beat in Redis recently; with
`--live`, liveness, exit 0 when its liveness file is fresh (no Redis at all)."""

from shared.health import check

if __name__ == "__main__":
    check("worker")
