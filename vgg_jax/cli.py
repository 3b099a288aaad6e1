"""What the command-line entry points share: a log that shows progress, not file writes."""

import logging as pylogging

from absl import logging


def setup_logging() -> None:
    """INFO logging through absl, without orbax's line for every file it writes."""
    logging.set_verbosity(logging.INFO)
    logging.get_absl_logger().addFilter(
        lambda r: r.levelno >= pylogging.WARNING or "/orbax/" not in r.pathname)
