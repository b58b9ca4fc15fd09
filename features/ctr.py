"""The click-through-rate feature set used by the demo, the tests and the benchmarks.

A realistic small set that exercises what goes wrong in practice: local time in the user's timezone,
a click-history window, an imputed and scaled price, a fitted category vocabulary and a fixed-domain
device. Import it from training and serving code alike::

    from features.ctr import CTR_FEATURES
    state = CTR_FEATURES.fit(train_raw)                      # training job
    X = CTR_FEATURES.transform_frame(train_raw, state)
    x = CTR_FEATURES.transform_record(request_inputs, state)  # serving handler
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from features.core import OTHER_CATEGORY, FeatureKind, FeatureSet, Params, UnknownCategory
from features.inputs import InputColumns, InputType, RawInput
from features.ops import TimePart, count_in_window, local_time_part

DEVICES = ("desktop", "mobile", "tablet")
#: How many of the most frequent training categories get their own value; the rest map to ``__other__``.
CATEGORY_VOCABULARY_SIZE = 20

CTR_FEATURES = FeatureSet(
    "ctr",
    inputs=[
        RawInput("event_time", InputType.TIMESTAMP, description="when the ad was shown (aware)"),
        RawInput("user_tz", InputType.TIMEZONE, description="the user's IANA timezone"),
        RawInput("click_times", InputType.TIMESTAMP_LIST, description="the user's past clicks (aware)"),
        RawInput("price", InputType.FLOAT, nullable=True, low=0.0, high=1e6, description="item price"),
        RawInput("category", InputType.STRING, description="item category"),
        RawInput("device", InputType.STRING, allowed=DEVICES, description="client device"),
        RawInput("ad_position", InputType.INT, low=1, high=10, description="slot on the page (1 = top)"),
    ],
)


@CTR_FEATURES.feature(
    kind=FeatureKind.NUMERIC, inputs=["event_time", "user_tz"], low=0, high=23, group="context", default=12.0
)
def hour_of_day_local(raw: InputColumns, params: Params) -> pd.Series[Any]:
    """Hour of the impression in the user's own timezone (0-23)."""
    return local_time_part(raw["event_time"], raw["user_tz"], TimePart.HOUR)


@CTR_FEATURES.feature(
    kind=FeatureKind.NUMERIC, inputs=["event_time", "user_tz"], low=0, high=6, group="context", default=2.0
)
def day_of_week_local(raw: InputColumns, params: Params) -> pd.Series[Any]:
    """Day of the week of the impression in the user's timezone (Monday = 0)."""
    return local_time_part(raw["event_time"], raw["user_tz"], TimePart.DAY_OF_WEEK)


@CTR_FEATURES.feature(
    kind=FeatureKind.NUMERIC, inputs=["click_times", "event_time"], low=0, group="history", default=0.0
)
def clicks_7d(raw: InputColumns, params: Params) -> pd.Series[Any]:
    """Clicks in the 7 days before the impression: window [t - 7 days, t), the impression itself excluded."""
    return count_in_window(raw["click_times"], raw["event_time"], start_before=pd.Timedelta(days=7))


@CTR_FEATURES.feature(
    kind=FeatureKind.NUMERIC, inputs=["click_times", "event_time"], low=0, group="history", default=0.0
)
def clicks_24h(raw: InputColumns, params: Params) -> pd.Series[Any]:
    """Clicks in the 24 hours before the impression: window [t - 24 h, t)."""
    return count_in_window(raw["click_times"], raw["event_time"], start_before=pd.Timedelta(hours=24))


def _fit_log_price(raw: InputColumns) -> dict[str, Any]:
    logged = np.log1p(raw["price"].to_numpy(dtype="float64"))
    observed = logged[~np.isnan(logged)]
    if observed.size == 0:
        return {"median": 0.0, "mean": 0.0, "std": 1.0}
    median = float(np.median(observed))
    filled = np.where(np.isnan(logged), median, logged)
    # math.fsum is exactly rounded: numpy's SIMD sums can differ in the last bit with the array's memory
    # alignment, and a FeatureState must not depend on how the training rows were chunked.
    mean = math.fsum(filled.tolist()) / filled.size
    std = math.sqrt(math.fsum(((filled - mean) ** 2).tolist()) / filled.size)
    return {"median": median, "mean": mean, "std": std if std > 0 else 1.0}


def _log_price(raw: InputColumns, params: Params) -> np.ndarray[Any, np.dtype[np.float64]]:
    logged = np.log1p(raw["price"].to_numpy(dtype="float64"))
    return np.where(np.isnan(logged), float(params["median"]), logged)


@CTR_FEATURES.feature(
    kind=FeatureKind.NUMERIC, inputs=["price"], fit=_fit_log_price, low=0, group="item", default=0.0
)
def log_price(raw: InputColumns, params: Params) -> pd.Series[Any]:
    """log(1 + price); a missing price is imputed with the training median of log(1 + price)."""
    return pd.Series(_log_price(raw, params), index=raw.index)


@CTR_FEATURES.feature(
    kind=FeatureKind.NUMERIC, inputs=["price"], fit=_fit_log_price, group="item", default=0.0
)
def log_price_z(raw: InputColumns, params: Params) -> pd.Series[Any]:
    """Imputed log price standardised with the training mean and standard deviation."""
    return pd.Series(
        (_log_price(raw, params) - float(params["mean"])) / float(params["std"]), index=raw.index
    )


@CTR_FEATURES.feature(kind=FeatureKind.BOOLEAN, inputs=["price"], group="item", default=False)
def price_missing(raw: InputColumns, params: Params) -> pd.Series[Any]:
    """Whether the price was missing (and so imputed): imputation hides it from the model otherwise."""
    return raw["price"].isna()


def _fit_vocabulary(raw: InputColumns) -> dict[str, Any]:
    counts = raw["category"].value_counts(dropna=True)
    # Ties broken by name so the vocabulary, and so the state hash, is the same in every process.
    ranked = sorted(counts.items(), key=lambda item: (-int(item[1]), str(item[0])))
    top = sorted(str(name) for name, _ in ranked[:CATEGORY_VOCABULARY_SIZE])
    return {"vocabulary": [*top, OTHER_CATEGORY]}


@CTR_FEATURES.feature(
    kind=FeatureKind.CATEGORICAL,
    inputs=["category"],
    fit=_fit_vocabulary,
    group="item",
    default=OTHER_CATEGORY,
)
def category(raw: InputColumns, params: Params) -> pd.Series[Any]:
    """Item category; categories outside the training top-20 become ``__other__``."""
    return raw["category"]


@CTR_FEATURES.feature(
    kind=FeatureKind.CATEGORICAL,
    inputs=["device"],
    categories=DEVICES,
    unknown=UnknownCategory.STRICT,
    group="context",
    default="desktop",
)
def device(raw: InputColumns, params: Params) -> pd.Series[Any]:
    """Client device; a device outside the declared three is an error, not a silent new category."""
    return raw["device"]


@CTR_FEATURES.feature(
    kind=FeatureKind.NUMERIC, inputs=["ad_position"], low=1, high=10, group="context", default=1.0
)
def ad_position(raw: InputColumns, params: Params) -> pd.Series[Any]:
    """Slot on the page, 1 = top."""
    return raw["ad_position"]
