"""Run the whole stack locally: `python -m services.stack` (what `make run` does)."""

import asyncio
import os
import sys

from services.stack.supervisor import Supervisor, plan
from shared.settings import Settings

settings = Settings()
services, env = plan(settings, "redis_url" in settings.model_fields_set, bool(settings.smtp_host))
print(f"starting {', '.join(s.name for s in services)}", flush=True)
print(
    f"API http://127.0.0.1:{settings.api_port}/api  "
    f"docs http://127.0.0.1:{settings.api_port}/docs  "
    f"dashboard http://127.0.0.1:{settings.dashboard_port}/",
    flush=True,
)
os.environ.setdefault("PYTHONPATH", os.getcwd())
sys.exit(asyncio.run(Supervisor(services, env).run()))
