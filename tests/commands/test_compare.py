"""``skewguard compare``: two data files in, a verdict per chunk out, exit code by what was found."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from skewguard.cli import app
from skewguard.commands.common import EXIT_FINDING, EXIT_OK, EXIT_USAGE
from skewguard.commands.compare import parse_columns
from skewguard.detect import Method
from skewguard.results import json_bytes

REFERENCE_ROWS = 6000
COUNTRIES = np.array(["DE", "FR", "NL", "PL"], dtype=object)


def draw(rng: np.random.Generator, n: int, *, shift: float = 0.0) -> pd.DataFrame:
    """``amount`` moves by ``shift`` standard deviations; the other columns never move."""
    return pd.DataFrame(
        {
            "amount": rng.normal(100.0 + 20.0 * shift, 20.0, n),
            "country": rng.choice(COUNTRIES, n, p=[0.4, 0.3, 0.2, 0.1]),
            "store": rng.integers(0, 5, n),
        }
    )


def write(frame: pd.DataFrame, path: Path) -> Path:
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    return path


def run(*args: str | Path) -> Any:
    return CliRunner().invoke(app, ["compare", *map(str, args)])


def run_json(*args: str | Path) -> tuple[int, dict[str, Any]]:
    result = run(*args, "--json")
    assert result.exit_code in (EXIT_OK, EXIT_FINDING), result.output
    return result.exit_code, json.loads(result.stdout)


@pytest.fixture(scope="module")
def reference_frame() -> pd.DataFrame:
    return draw(np.random.default_rng(11), REFERENCE_ROWS)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_a_shifted_column_drifts_and_exits_1(
    reference_frame: pd.DataFrame, tmp_path: Path, suffix: str
) -> None:
    reference = write(reference_frame, tmp_path / f"reference{suffix}")
    current = write(draw(np.random.default_rng(12), 3000, shift=0.5), tmp_path / f"current{suffix}")
    code, document = run_json(reference, current)
    assert code == EXIT_FINDING
    (chunk,) = document["chunks"]
    assert (chunk["index"], chunk["rows"]) == (0, 3000)
    features = chunk["features"]
    assert list(features) == ["amount", "country", "store"]
    assert features["amount"]["drifted"] is True
    assert features["amount"]["method"] == Method.WASSERSTEIN.value
    assert features["amount"]["effect"] > features["amount"]["threshold"]
    assert features["amount"]["p_value"] < 1e-6
    assert not features["country"]["drifted"] and not features["store"]["drifted"]


def test_identical_distributions_exit_0_with_a_table_per_chunk(
    reference_frame: pd.DataFrame, tmp_path: Path
) -> None:
    reference = write(reference_frame, tmp_path / "reference.parquet")
    current = write(draw(np.random.default_rng(13), 3000), tmp_path / "current.csv")
    result = run(reference, current)
    assert result.exit_code == EXIT_OK, result.output
    assert "chunk 0" in result.stdout and "no drift in 1 chunk(s)" in result.stdout
    for name in ("amount", "country", "store"):
        assert name in result.stdout
    code, document = run_json(reference, current)
    assert code == EXIT_OK
    assert not any(f["drifted"] for f in document["chunks"][0]["features"].values())


def test_the_table_names_the_drifted_column(reference_frame: pd.DataFrame, tmp_path: Path) -> None:
    reference = write(reference_frame, tmp_path / "reference.csv")
    current = write(draw(np.random.default_rng(14), 3000, shift=0.5), tmp_path / "current.csv")
    result = run(reference, current)
    assert result.exit_code == EXIT_FINDING, result.output
    assert "1 drifted" in result.stdout
    assert "drift in 1 of 1 chunk(s): amount" in result.stdout


def test_chunk_size_gives_one_entry_per_chunk_and_finds_the_shifted_one(
    reference_frame: pd.DataFrame, tmp_path: Path
) -> None:
    rng = np.random.default_rng(15)
    current = pd.concat([draw(rng, 1000), draw(rng, 1000, shift=0.6), draw(rng, 500)], ignore_index=True)
    reference = write(reference_frame, tmp_path / "reference.parquet")
    code, document = run_json(reference, write(current, tmp_path / "current.parquet"), "--chunk-size", "1000")
    assert code == EXIT_FINDING
    chunks = document["chunks"]
    assert [(c["index"], c["rows"]) for c in chunks] == [(0, 1000), (1, 1000), (2, 500)]
    drifted = [[name for name, f in c["features"].items() if f["drifted"]] for c in chunks]
    assert drifted == [[], ["amount"], []]


def test_categorical_option_turns_integer_codes_into_categories(
    reference_frame: pd.DataFrame, tmp_path: Path
) -> None:
    rng = np.random.default_rng(16)
    current = draw(rng, 3000)
    current["store"] = np.where(rng.random(3000) < 0.1, 7, current["store"])  # a store never seen before
    reference = write(reference_frame, tmp_path / "reference.csv")
    current_path = write(current, tmp_path / "current.csv")
    _, as_numbers = run_json(reference, current_path)
    code, as_codes = run_json(reference, current_path, "--categorical", " store, ")
    assert as_numbers["chunks"][0]["features"]["store"]["method"] != Method.JENSEN_SHANNON.value
    store = as_codes["chunks"][0]["features"]["store"]
    assert code == EXIT_FINDING
    assert store["drifted"] is True and store["method"] == Method.JENSEN_SHANNON.value


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing.csv", "current.csv"], "does not exist"),
        (["reference.csv", "current.txt"], "unsupported format"),
        (["reference.csv", "current.csv", "--categorical", "amount,nope"], "nope"),
        (["reference.csv", "current.csv", "--chunk-size", "0"], "--chunk-size"),
        (["reference.csv", "current.csv", "--alpha", "2"], "--alpha"),
        (["reference.csv", "current.csv", "--min-count", "0"], "--min-count"),
        (["reference.csv", "lacking.csv"], "country"),
    ],
)
def test_usage_errors_exit_2_with_one_line(
    reference_frame: pd.DataFrame, tmp_path: Path, args: list[str], message: str
) -> None:
    write(reference_frame.head(500), tmp_path / "reference.csv")
    write(reference_frame.tail(500), tmp_path / "current.csv")
    write(reference_frame.tail(500).drop(columns=["country"]), tmp_path / "lacking.csv")
    (tmp_path / "current.txt").write_text("amount\n1\n")
    result = run(*[str(tmp_path / a) if a.endswith((".csv", ".txt")) else a for a in args])
    assert result.exit_code == EXIT_USAGE, result.output
    assert result.stderr.startswith("error:") and message in result.stderr
    assert "Traceback" not in result.output and result.stdout == ""


def test_column_lists_and_non_finite_numbers_are_normalised() -> None:
    assert parse_columns(None) == []
    assert parse_columns(" a, b,,c ,") == ["a", "b", "c"]
    document = {"chunks": [{"threshold": float("inf"), "effect": float("nan"), "p_value": 0.5, "rows": 3}]}
    expected = {"chunks": [{"threshold": None, "effect": None, "p_value": 0.5, "rows": 3}]}
    assert json.loads(json_bytes(document)) == expected
