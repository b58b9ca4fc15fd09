"""Just enough PromQL reading to check a dashboard against the metrics the daemon exports.

No PromQL parser is installed, and the expressions in deploy/ only need their series names, the label
names they match or group on, and whether a counter sits inside rate()/increase(). Strings, label
matchers, ranges, Grafana variables and grouping clauses are stripped; what is left that is an
identifier not followed by "(" and not a keyword is a series name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_SELECTOR = re.compile(r"(?<![\w:])([A-Za-z_:][\w:]*)?\s*\{([^}]*)\}")
_MATCHER_KEY = re.compile(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)")
_RANGE = re.compile(r"\[[^\]]*\]")
_VARIABLE = re.compile(r"\$\{?\w+\}?")
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_IDENT = re.compile(r"(?<![\w.:$])([A-Za-z_:][\w:]*)(\s*\()?")
_KEYWORDS = frozenset(
    {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset"}
)
_RATE_CALL = re.compile(r"\b(?:rate|irate|increase)\(\s*$")


@dataclass(frozen=True)
class SeriesUse:
    """One series name in an expression and whether it is the argument of rate/irate/increase."""

    name: str
    in_rate: bool


@dataclass(frozen=True)
class ExpressionParts:
    """What an expression refers to."""

    series: tuple[SeriesUse, ...]
    matchers: tuple[tuple[str, frozenset[str]], ...]
    """(series name, label names its matcher block uses); the name is "" for a bare ``{...}``."""
    grouping_labels: frozenset[str]


def parse(expr: str) -> ExpressionParts:
    """Split a PromQL expression into series names, matcher label names and grouping labels."""
    text = _STRING.sub('""', expr)
    matchers = tuple(
        (m.group(1) or "", frozenset(_MATCHER_KEY.findall(m.group(2)))) for m in _SELECTOR.finditer(text)
    )
    text = re.sub(r"\{[^}]*\}", "", text)
    text = _RANGE.sub("", text)
    text = _VARIABLE.sub("", text)
    grouping: set[str] = set()
    for match in _GROUPING.finditer(text):
        grouping |= {label.strip() for label in match.group(2).split(",") if label.strip()}
    text = _GROUPING.sub(lambda m: m.group(1) if m.group(1).startswith("group_") else "", text)
    series: list[SeriesUse] = []
    for match in _IDENT.finditer(text):
        name, call = match.group(1), match.group(2)
        if call or name in _KEYWORDS:
            continue
        series.append(SeriesUse(name, bool(_RATE_CALL.search(text[: match.start()]))))
    return ExpressionParts(tuple(series), matchers, frozenset(grouping))


def label_values_metric(query: str) -> str:
    """The series of a Grafana ``label_values(series, label)`` variable query."""
    match = re.fullmatch(r"\s*label_values\(\s*([A-Za-z_:][\w:]*)\s*(?:\{[^}]*\})?\s*,\s*\w+\s*\)\s*", query)
    if match is None:
        msg = f"not a label_values(series, label) query: {query!r}"
        raise ValueError(msg)
    return match.group(1)


_MATCHER = re.compile(r"""([A-Za-z_]\w*)\s*(=~|!~|!=|=)\s*("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')""")
_NAME = re.compile(r"(?<![\w:$])([A-Za-z_:][\w:]*)(?![\w:])")


@dataclass(frozen=True)
class Matcher:
    """One ``label op "value"`` of a selector, the value without its quotes."""

    label: str
    op: str
    value: str


def selectors(expr: str, series: str) -> list[tuple[Matcher, ...]]:
    """The matchers of every occurrence of ``series`` in ``expr`` (an empty tuple for a bare name)."""
    found: list[tuple[Matcher, ...]] = []
    masked = _STRING.sub(lambda m: '"' + "_" * (len(m.group(0)) - 2) + '"', expr)
    for match in _NAME.finditer(masked):
        if match.group(1) != series:
            continue
        rest = masked[match.end() :]
        block = re.match(r"\s*\{[^}]*\}", rest)
        if block is None:
            found.append(())
            continue
        start = match.end() + block.start()
        text = expr[start : match.end() + block.end()]
        found.append(
            tuple(Matcher(m.group(1), m.group(2), m.group(3)[1:-1]) for m in _MATCHER.finditer(text))
        )
    return found
