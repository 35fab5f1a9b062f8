"""Start the REST gateway: `python -m services.api`."""

import uvicorn

from services.api.app import create_app
from shared.logging import configure_logging
from shared.settings import get_settings

settings = get_settings()
configure_logging("api", settings)
uvicorn.run(
    create_app(settings),
    host=settings.bind_host,
    port=settings.api_port,
    log_config=None,
    access_log=False,
    loop="uvloop",
    http="httptools",
)
