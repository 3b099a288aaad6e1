"""Errors the command-line tools report in one line (``error: ...``) instead of a traceback."""

PREEMPTED_EXIT_CODE = 75  # EX_TEMPFAIL: stopped on SIGTERM after a checkpoint; rerun to resume


class UserError(ValueError):
    """Bad input or a condition the user can fix; the message says what to do."""


class CheckpointError(UserError):
    """A checkpoint could not be written; earlier checkpoints are intact."""


class NonFiniteError(UserError):
    """The loss or gradients became NaN or infinite; the last good checkpoint is kept."""


class Preempted(Exception):
    """Training stopped on SIGTERM after writing a checkpoint of ``step``."""

    def __init__(self, step: int, directory: str):
        super().__init__(f"Preempted: checkpoint of step {step} written to {directory}; "
                         f"rerun the same command to resume.")
        self.step = step
