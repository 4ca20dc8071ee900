"""The launcher's one error type."""


class LaunchError(RuntimeError):
    """Bad input found before anything was submitted; the message says what to do."""
