"""The one command-line convention of every entry point (``python -m vgg_jax.X``).

Each tool defines its flags in a ``define_flags()`` (absl; ``--help`` lists them) and a
``main(argv)``, and ends with ``cli.run(main, define_flags)``. Then every tool reports bad
input the same way: a bad flag or ``--config.x=`` override, a config field out of range
(``vgg_jax.training.schema``) or any ``UserError`` prints ``error: ...`` lines (one per problem) and
exits with 2; ``Preempted`` prints its message and exits with 75.
"""

from __future__ import annotations

import contextlib
import logging as pylogging
import os
import sys
from typing import Callable, Optional, Sequence

from absl import app, flags, logging

from vgg_jax.errors import PREEMPTED_EXIT_CODE, Preempted, UserError

USAGE_EXIT_CODE = 2
EMA_FLAG_HELP = ("Use the moving-average weights of a checkpoint trained with ema_decay; "
                 "--noema: its trained weights.")


def setup_logging() -> None:
    """INFO logging through absl, without orbax's line for every file it writes."""
    logging.set_verbosity(logging.INFO)
    logging.get_absl_logger().addFilter(
        lambda r: r.levelno >= pylogging.WARNING or "/orbax/" not in r.pathname)


def fail(*problems: str) -> None:
    """Prints one ``error:`` line per problem and exits with status 2."""
    # One write for all lines: print() writes a line and its newline separately, and a
    # background thread (orbax's, a failed save's) logging in between could split them.
    sys.stderr.write("".join(f"error: {' '.join(str(p).split())}\n" for p in problems))
    sys.stderr.flush()
    leave(USAGE_EXIT_CODE)


def leave(code: int) -> None:
    """Exits with ``code``; at once if training left a data stream mid-flight.

    Destroying a tf.data iterator mid-stream waits for its work in flight (30 s after a
    preemption, measured), which would outlast a scheduler's grace period. The checkpoint
    and logs are on disk by then, so such a process flushes, leaves the JAX cluster and
    ends without Python's teardown.
    """
    pipeline = sys.modules.get("vgg_jax.data.pipeline")
    if pipeline is None or not pipeline.abandoned():
        sys.exit(code)
    logging.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    import jax
    jax.distributed.shutdown()  # a no-op for a single process
    os._exit(code)


def parse_flags(argv: Sequence[str]) -> list[str]:
    """absl's flag parsing, with a bad flag or ``--config.x=`` override reported in one line."""
    try:
        return flags.FLAGS(argv)
    except SystemExit:  # absl's --help/--helpshort/--helpfull print the flags, then exit 1
        if any(a.split("=")[0] in ("-h", "-?", "--help", "--helpshort", "--helpfull")
               for a in argv[1:]):
            sys.exit(0)
        raise
    except flags.Error as e:
        fail(str(e))
    except (AttributeError, KeyError) as e:
        field = str(e).strip("\"'")
        fail(f"unknown config field {field!r}: the fields are listed in configs/default.py.")
    except (TypeError, ValueError) as e:
        fail(f"bad config override: {e}")


def resolve_config(config):
    """A parsed ``--config`` with references resolved; an unloadable file is an error."""
    try:
        return config.copy_and_resolve_references()
    except OSError as e:  # ml_collections reports an unloadable config file on first access
        raise UserError(str(e.__cause__ or e)) from None


@contextlib.contextmanager
def exit_codes():
    """Ends the process as the tools document: ``error: ...`` and 2 on a ``UserError`` (one
    line per problem of a ``schema.ConfigError``), the message and 75 on ``Preempted``."""
    try:
        yield
    except UserError as e:
        fail(*getattr(e, "problems", [str(e)]))
    except Preempted as e:
        print(str(e), file=sys.stderr)
        leave(PREEMPTED_EXIT_CODE)


def no_arguments(argv: Sequence[str]) -> None:
    """Raises ``UserError`` if a tool that takes only flags got positional arguments."""
    if len(argv) > 1:
        raise UserError(f"unexpected arguments {' '.join(argv[1:])}: this command takes "
                        f"flags only (see --help).")


def run(main: Callable[[list[str]], Optional[int]], define_flags: Callable[[], None]) -> None:
    """Defines the tool's flags, parses them, and runs ``main`` under ``exit_codes``.

    ``main`` receives the positional arguments (``argv[0]`` first); its return value is the
    exit status (None: 0).
    """
    define_flags()

    def wrapped(argv):
        setup_logging()
        with exit_codes():
            return main(argv)

    app.run(wrapped, flags_parser=parse_flags)
