"""Start one notifier process: `python -m services.notifier`."""

from services.notifier.runner import main
from shared.logging import configure_logging
from shared.runtime import run
from shared.settings import get_settings

settings = get_settings()
configure_logging("notifier", settings)
run(main(settings))
