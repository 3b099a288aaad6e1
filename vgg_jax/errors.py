"""The one exception type for bad user input: the entry points print it as one line."""


class UserError(ValueError):
    """Bad configuration, data or checkpoint, with a message that says what to do."""
