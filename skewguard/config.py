"""Configuration helpers shared by every command: references to user code, config files.

Users point skewguard at their own feature sets and model factories with ``"module:attribute"``
references; resolving them is done here, once, with errors that say which reference failed and why.
"""

from __future__ import annotations

import importlib
import tomllib
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import ValidationError

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


def read_config_document(file: Path) -> dict[str, Any]:
    """Read a TOML (.toml) or YAML (.yaml/.yml) config file into a mapping; ConfigError naming the file."""
    if not file.is_file():
        msg = f"config file {str(file)!r}: not found (expected a .toml, .yaml or .yml file)"
        raise ConfigError(msg)
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        msg = f"config file {file.name!r}: cannot be read as UTF-8 text ({exc})"
        raise ConfigError(msg) from exc
    suffix = file.suffix.lower()
    data: Any
    if suffix == ".toml":
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            msg = f"config {file.name}: invalid TOML ({exc})"
            raise ConfigError(msg) from exc
    elif suffix in {".yaml", ".yml"}:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            msg = f"config {file.name}: invalid YAML ({exc})"
            raise ConfigError(msg) from exc
    else:
        msg = f"config file {file.name!r}: expected a .toml, .yaml or .yml extension"
        raise ConfigError(msg)
    if not isinstance(data, dict):
        msg = f"config {file.name}: expected a table of keys at the top level, got {type(data).__name__}"
        raise ConfigError(msg)
    return data


def describe_validation_error(name: str, error: ValidationError) -> str:
    """One line naming every bad key of a config and what was wrong with it."""
    problems = []
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "(top level)"
        if item["type"] == "extra_forbidden":
            problems.append(f"key {key!r}: unknown key")
        elif item["type"] == "missing":
            problems.append(f"key {key!r}: required key is missing")
        else:
            problems.append(f"key {key!r}: {item['msg']} (got {item.get('input')!r})")
    return f"config {name}: " + "; ".join(problems)
