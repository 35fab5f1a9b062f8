"""Run the whole stack locally: `python -m services.stack` (what `make run` does)."""

import asyncio
import os
import sys

from services.stack.supervisor import Supervisor, plan, taken_ports
from shared.settings import Settings

settings = Settings()
redis_url_given, smtp_given = "redis_url" in settings.model_fields_set, bool(settings.smtp_host)
taken = taken_ports(settings, redis_url_given, smtp_given)
if taken:
    sys.exit("cannot start the stack:\n  " + "\n  ".join(taken))
services, env = plan(settings, redis_url_given, smtp_given)
print(f"starting {', '.join(s.name for s in services)}", flush=True)
print(
    f"API http://127.0.0.1:{settings.api_port}/api  "
    f"docs http://127.0.0.1:{settings.api_port}/docs  "
    f"dashboard http://127.0.0.1:{settings.dashboard_port}/",
    flush=True,
)
os.environ.setdefault("PYTHONPATH", os.getcwd())
sys.exit(asyncio.run(Supervisor(services, env).run()))
