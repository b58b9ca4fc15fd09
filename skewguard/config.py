"""Configuration helpers shared by every command: references to user code, config files.

Users point skewguard at their own feature sets and model factories with ``"module:attribute"``
references; resolving them is done here, once, with errors that say which reference failed and why.
"""

from __future__ import annotations

import importlib
from typing import Any, TypeVar

from skewguard.errors import ConfigError

T = TypeVar("T")


def import_object(reference: str, *, expected: type[T] | None = None, what: str = "object") -> T | Any:
    """Resolve ``"package.module:attr.sub"`` to the object it names.

    ``expected`` checks the type of the result, so a typo that lands on the wrong object fails here with
    a clear message instead of deep inside a computation.
    """
    module_name, sep, attribute = reference.partition(":")
    if not sep or not module_name or not attribute:
        msg = f"{what} reference {reference!r} must look like 'package.module:attribute'"
        raise ConfigError(msg)
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        msg = f"{what} reference {reference!r}: cannot import module {module_name!r} ({exc})"
        raise ConfigError(msg) from exc
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            msg = f"{what} reference {reference!r}: module {module_name!r} has no attribute {attribute!r}"
            raise ConfigError(msg) from None
    if expected is not None and not isinstance(target, expected):
        msg = f"{what} reference {reference!r} is a {type(target).__name__}, expected a {expected.__name__}"
        raise ConfigError(msg)
    return target
