"""What the command-line entry points share: one-line flag errors and a progress log."""

import contextlib
import logging as pylogging
import sys

from absl import flags, logging

from vgg_jax.errors import PREEMPTED_EXIT_CODE, Preempted, UserError


def setup_logging() -> None:
    """INFO logging through absl, without orbax's line for every file it writes."""
    logging.set_verbosity(logging.INFO)
    logging.get_absl_logger().addFilter(
        lambda r: r.levelno >= pylogging.WARNING or "/orbax/" not in r.pathname)


def parse_flags(argv):
    """absl's flag parsing, with a bad ``--config.x=`` override reported in one line."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
    except (AttributeError, KeyError) as e:
        field = str(e).strip("\"'")
        print(f"error: unknown config field {field!r}: the fields are listed in configs/default.py.",
              file=sys.stderr)
    except (TypeError, ValueError) as e:
        print(f"error: bad config override: {e}", file=sys.stderr)
    sys.exit(2)


def resolve_config(config):
    """The parsed ``--config`` with references resolved; an unloadable file exits with 2."""
    try:
        return config.copy_and_resolve_references()
    except OSError as e:  # ml_collections reports an unloadable config file on first access
        print(f"error: {' '.join(str(e.__cause__ or e).split())}", file=sys.stderr)
        sys.exit(2)


@contextlib.contextmanager
def exit_codes():
    """Ends the process as the tools document: ``error: ...`` and 2 on a ``UserError``, the
    preemption message and 75 on ``Preempted``."""
    try:
        yield
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except Preempted as e:
        print(str(e), file=sys.stderr)
        sys.exit(PREEMPTED_EXIT_CODE)
