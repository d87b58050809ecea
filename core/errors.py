"""The one exception type users can cause, and cancellation of long jobs."""


class LogitscopeError(Exception):
    """An error the user can fix: the message says what is wrong and what to do."""


class Cancelled(Exception):
    """A long job (training, precompute) was cancelled through its cancel callback."""
