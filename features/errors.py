"""The feature library's single error type.

``features/`` must not import ``skewguard`` (it is imported by training jobs and serving handlers that
should not pull in the monitor), so it carries its own error. Every message names the feature and/or
the raw input and the offending value, because the person reading it is usually debugging a serving
request or a training file, not this library.
"""

from __future__ import annotations

from typing import Any


class FeatureError(ValueError):
    """A feature could not be declared, fitted or computed.

    Attributes name what went wrong so callers (the CLI, the monitor daemon) can report it without
    parsing the message: ``feature`` (feature name), ``input`` (raw input name), ``value`` (the offending
    value, if one), ``row`` (row label in a frame, if one).
    """

    def __init__(
        self,
        message: str,
        *,
        feature: str | None = None,
        input: str | None = None,
        value: Any = None,
        row: Any = None,
    ) -> None:
        super().__init__(message)
        self.feature = feature
        self.input = input
        self.value = value
        self.row = row
