"""Start the dashboard: `python -m services.dashboard`."""

import uvicorn

from services.dashboard.app import create_app
from shared.logging import configure_logging
from shared.settings import get_settings

settings = get_settings()
configure_logging("dashboard", settings)
uvicorn.run(
    create_app(settings),
    host=settings.bind_host,
    port=settings.dashboard_port,
    log_config=None,
    access_log=False,
    loop="uvloop",
    http="httptools",
    timeout_graceful_shutdown=3,
)
