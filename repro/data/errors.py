"""The one exception type the data code raises for bad user input."""
from __future__ import annotations


class DataError(ValueError):
    """Missing, malformed or mis-configured data. The message is one line that names the
    offending file or key and, where it helps, the command that fixes it."""
