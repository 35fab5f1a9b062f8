"""Start the scheduler: `python -m services.scheduler`."""

from services.scheduler.runner import main
from shared.logging import configure_logging
from shared.runtime import run
from shared.settings import get_settings

settings = get_settings()
configure_logging("scheduler", settings)
run(main(settings))
