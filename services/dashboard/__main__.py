"""Start the dashboard: `python -m services.dashboard`."""

import uvicorn

from services.dashboard.app import create_app
from shared.logging import configure_logging
from shared.runtime import tune_gc
from shared.settings import get_settings

settings = get_settings()
configure_logging("dashboard", settings)
app = create_app(settings)
# As in the other services (see services/api/__main__.py): start-up's objects out of the
# collector's walks, so a full collection does not pause every stream it serves.
tune_gc()
uvicorn.run(
    app,
    host=settings.bind_host,
    port=settings.dashboard_port,
    log_config=None,
    access_log=False,
    loop="uvloop",
    http="httptools",
    timeout_graceful_shutdown=3,
)
