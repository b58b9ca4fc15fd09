"""Write ``ctr_train.parquet``, the demo training data ``retrain.toml`` reads.

Two weeks of synthetic CTR requests with a learnable click label (``skewguard.demo.traffic``), fixed
seed, so the file is the same on every machine. Run from the repository root::

    .venv/bin/python deploy/examples/make_demo_data.py
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from skewguard.demo.traffic import generate_requests

ROWS = 6000
SEED = 2026
START = dt.datetime(2026, 3, 2, tzinfo=dt.UTC)


def main() -> None:
    """Generate and write the file next to this script."""
    frame = generate_requests(ROWS, seed=SEED, start=START, span=dt.timedelta(days=14))
    out = Path(__file__).resolve().parent / "ctr_train.parquet"
    frame.to_parquet(out, index=False)
    print(f"wrote {len(frame)} rows to {out.name}")


if __name__ == "__main__":
    main()
