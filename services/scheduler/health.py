"""Health check for compose: exit 0 when this host's scheduler beat recently."""

from shared.health import check

if __name__ == "__main__":
    check("scheduler")
