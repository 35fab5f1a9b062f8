#!/opt/venv/bin/python
"""Container health check for every taskqueue service (installed as `taskqueue-healthcheck`).

    taskqueue-healthcheck                 # same as `api`
    taskqueue-healthcheck api             # GET http://127.0.0.1:$API_PORT/readyz -> 2xx
    taskqueue-healthcheck dashboard       # GET http://127.0.0.1:$DASHBOARD_PORT/readyz -> 2xx
    taskqueue-healthcheck worker          # python -m services.worker.health (heartbeat in Redis)
    taskqueue-healthcheck http://host:port/path   # any URL -> 2xx

Add `--live` for liveness instead of readiness: `api --live` and `dashboard --live` GET
/livez, `worker --live` (scheduler, notifier) checks the process's liveness file. A liveness
check never touches Redis, so a Redis outage marks nothing unhealthy and restarts nothing;
readiness (without `--live`) fails while Redis is away.

Exit status 0 when healthy, 1 otherwise, as Docker's HEALTHCHECK expects.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

HTTP_PORTS = {"api": ("API_PORT", "8080"), "dashboard": ("DASHBOARD_PORT", "8081")}


def http_target(service: str, live: bool) -> str:
    variable, default = HTTP_PORTS[service]
    path = "/livez" if live else "/readyz"
    return f"http://127.0.0.1:{os.environ.get(variable, default)}{path}"


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
    flags = [arg for arg in argv[1:] if arg.startswith("--")]
    names = [arg for arg in argv[1:] if not arg.startswith("--")]
    target = names[0] if names else "api"
    if target.startswith(("http://", "https://")):
        return check_url(target)
    if target in HTTP_PORTS:
        return check_url(http_target(target, "--live" in flags))
    # worker, scheduler, notifier: the service's own check (--live: its liveness file)
    os.execv(sys.executable, [sys.executable, "-m", f"services.{target}.health", *flags])
    return 1  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv))
