#!/opt/venv/bin/python
"""Container health check for every taskqueue service (installed as `taskqueue-healthcheck`).

    taskqueue-healthcheck                 # same as `api`
    taskqueue-healthcheck api             # GET http://127.0.0.1:$API_PORT/api/health -> 2xx
    taskqueue-healthcheck dashboard       # GET http://127.0.0.1:$DASHBOARD_PORT/healthz -> 2xx
    taskqueue-healthcheck worker          # python -m services.worker.health (heartbeat in Redis)
    taskqueue-healthcheck http://host:port/path   # any URL -> 2xx

Exit status 0 when healthy, 1 otherwise, as Docker's HEALTHCHECK expects.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

HTTP_TARGETS = {
    "api": lambda: f"http://127.0.0.1:{os.environ.get('API_PORT', '8080')}/api/health",
    "dashboard": lambda: f"http://127.0.0.1:{os.environ.get('DASHBOARD_PORT', '8081')}/healthz",
}


def check_url(url: str) -> int:
    timeout = float(os.environ.get("HEALTHCHECK_TIMEOUT", "4"))
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - fixed local URL
            status = response.status
    except urllib.error.HTTPError as exc:
        print(f"unhealthy: {url} -> HTTP {exc.code}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:
        print(f"unhealthy: {url} -> {exc}", file=sys.stderr)
        return 1
    if 200 <= status < 300:
        return 0
    print(f"unhealthy: {url} -> HTTP {status}", file=sys.stderr)
    return 1


def main(argv: list[str]) -> int:
    target = argv[1] if len(argv) > 1 else "api"
    if target.startswith(("http://", "https://")):
        return check_url(target)
    if target in HTTP_TARGETS:
        return check_url(HTTP_TARGETS[target]())
    # worker, scheduler, notifier: the service's own heartbeat check
    os.execv(sys.executable, [sys.executable, "-m", f"services.{target}.health", *argv[2:]])
    return 1  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv))
