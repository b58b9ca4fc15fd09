"""Reading training and reference data files (csv, parquet) in bounded-memory chunks.

One home for file formats, so the baseline builder, ``validate`` and ``compare`` accept the same files
and fail the same way: a ``DataError`` naming the file and what was wrong.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from skewguard.errors import DataError

#: Rows per chunk when streaming a file: large enough for vectorised folding, small enough for memory.
DEFAULT_CHUNK_ROWS = 200_000

SUPPORTED_SUFFIXES = (".csv", ".parquet", ".pq")


def _check(path: Path) -> str:
    if not path.exists():
        msg = f"data file {str(path)!r} does not exist"
        raise DataError(msg)
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        msg = f"data file {str(path)!r}: unsupported format {suffix!r}; expected one of {SUPPORTED_SUFFIXES}"
        raise DataError(msg)
    return suffix


def count_rows(path: Path) -> int | None:
    """Row count when cheap to know (parquet metadata), else ``None`` (csv would need a full scan)."""
    if _check(path) == ".csv":
        return None
    try:
        return int(pq.ParquetFile(path).metadata.num_rows)
    except (OSError, ValueError) as exc:
        msg = f"data file {str(path)!r}: not a readable parquet file ({exc})"
        raise DataError(msg) from exc


def _batch_to_pandas(batch: pa.RecordBatch) -> pd.DataFrame:
    """Arrow → pandas, keeping the timezone of timestamps inside list columns.

    ``to_pandas`` turns ``list<timestamp[ns, tz=UTC]>`` cells into naive numpy datetimes, which would
    then (rightly) be rejected as naive; such columns are converted element-wise to aware Timestamps.
    """
    frame: pd.DataFrame = batch.to_pandas()
    for index, arrow_field in enumerate(batch.schema):
        kind = arrow_field.type
        if pa.types.is_list(kind) and pa.types.is_timestamp(kind.value_type) and kind.value_type.tz:
            zone = kind.value_type.tz
            naive_utc = batch.column(index).cast(pa.list_(pa.timestamp(kind.value_type.unit)))
            cells = [
                None if cell is None else [pd.Timestamp(v).tz_localize("UTC").tz_convert(zone) for v in cell]
                for cell in naive_utc.to_numpy(zero_copy_only=False)
            ]
            frame[arrow_field.name] = pd.Series(cells, index=frame.index, dtype=object)
    return frame


def iter_chunks(path: Path, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> Iterator[pd.DataFrame]:
    """Yield a file as DataFrames of at most ``chunk_rows`` rows each, so memory stays constant."""
    if chunk_rows < 1:
        msg = f"chunk_rows must be at least 1, got {chunk_rows}"
        raise DataError(msg)
    suffix = _check(path)
    try:
        if suffix == ".csv":
            yield from pd.read_csv(path, chunksize=chunk_rows)
        else:
            for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk_rows):
                yield _batch_to_pandas(batch)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        msg = f"data file {str(path)!r}: cannot be read ({type(exc).__name__}: {exc})"
        raise DataError(msg) from exc


def read_frame(paths: Path | Sequence[Path]) -> pd.DataFrame:
    """Read one or several files of the same columns into one frame (for data that fits in memory)."""
    paths = [paths] if isinstance(paths, Path) else list(paths)
    if not paths:
        msg = "no data file given"
        raise DataError(msg)
    frames = [chunk for path in paths for chunk in iter_chunks(path)]
    if not frames:
        msg = f"data file(s) {[str(p) for p in paths]} hold no rows"
        raise DataError(msg)
    frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    if frame.empty:
        msg = f"data file(s) {[str(p) for p in paths]} hold no rows"
        raise DataError(msg)
    return frame


def decode_json_lists(frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """Parse JSON-list text cells (how csv files carry list inputs such as click histories) in place.

    Parquet carries lists natively; csv cannot, so list-valued raw inputs are written there as JSON
    (``["2026-01-01T10:00:00+00:00", …]``). Cells that are not text are left as they are.
    """
    for column in columns:
        if column not in frame.columns or frame[column].dtype != object:
            continue

        def parse(cell: object, column: str = column) -> object:
            if not isinstance(cell, str):
                return cell
            try:
                return json.loads(cell)
            except ValueError as exc:
                msg = f"column {column!r}: cell {cell[:60]!r} is not a JSON list"
                raise DataError(msg) from exc

        frame[column] = frame[column].map(parse)
    return frame
