"""Start the REST gateway: `python -m services.api`."""

import uvicorn

from services.api.app import create_app
from shared.logging import configure_logging
from shared.runtime import tune_gc
from shared.settings import get_settings

settings = get_settings()
configure_logging("api", settings)
app = create_app(settings)
# As in the other services: start-up's objects (FastAPI's routes, pydantic's schemas) out
# of the collector's walks. Without it, each full collection re-walked them all and paused
# every request in flight: single creates at 64 connections had a p99 of ~50 ms, not ~10.
tune_gc()
uvicorn.run(
    app,
    host=settings.bind_host,
    port=settings.api_port,
    log_config=None,
    access_log=False,
    loop="uvloop",
    http="httptools",
)
