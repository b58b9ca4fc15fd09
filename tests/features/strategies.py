"""Hypothesis strategies for raw CTR requests, biased towards the cases that break feature code."""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import strategies as st

from features.ctr import DEVICES

UTC = dt.UTC
#: Zones with DST (north and south), half-hour DST (Lord Howe), odd offsets and no DST at all.
ZONES = [
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Australia/Lord_Howe",
    "Asia/Kolkata",
    "Pacific/Chatham",
    "America/Sao_Paulo",
    "Asia/Kathmandu",
]
#: Instants right at DST switches, where a naive or server-local computation goes wrong.
DST_EDGES = [
    dt.datetime(2026, 3, 29, 1, 0, tzinfo=UTC),  # Europe springs forward
    dt.datetime(2026, 10, 25, 1, 0, tzinfo=UTC),  # Europe falls back
    dt.datetime(2026, 3, 8, 7, 0, tzinfo=UTC),  # US springs forward
    dt.datetime(2026, 11, 1, 6, 0, tzinfo=UTC),  # US falls back
    dt.datetime(2026, 4, 4, 15, 0, tzinfo=UTC),  # Lord Howe, 30-minute shift
]

near_dst = st.builds(
    lambda edge, seconds: edge + dt.timedelta(seconds=seconds),
    st.sampled_from(DST_EDGES),
    st.integers(-7200, 7200),
)
anywhere = st.datetimes(
    # hypothesis wants naive bounds and attaches the timezone itself.
    min_value=dt.datetime(2000, 1, 1),  # noqa: DTZ001
    max_value=dt.datetime(2037, 12, 31),  # noqa: DTZ001
    timezones=st.just(UTC),
)
#: Aware instants, expressed in assorted zones (the same instant must give the same features).
aware_instant = st.builds(
    lambda instant, zone: instant.astimezone(ZoneInfo(zone)),
    st.one_of(near_dst, anywhere),
    st.sampled_from(ZONES),
)

# History offsets straddle the window edges exactly: 0 (the event itself), 24 h, 7 days.
history_offset = st.one_of(
    st.sampled_from([dt.timedelta(0), dt.timedelta(hours=24), dt.timedelta(days=7)]),
    st.timedeltas(min_value=dt.timedelta(days=-1), max_value=dt.timedelta(days=10)),
)
price = st.one_of(
    st.none(),
    st.sampled_from([0.0, 5e-324, 1e-300, 1e6, 0.1, 1.0]),
    st.floats(min_value=0.0, max_value=1e6, allow_nan=False),
)
category = st.sampled_from(["shoes", "books", "toys", "garden", "music", "brand-new-category"])


@st.composite
def ctr_request(draw: st.DrawFn) -> dict[str, Any]:
    """One raw CTR request as a serving handler would receive it."""
    event_time = draw(aware_instant)
    offsets = draw(st.lists(history_offset, max_size=12))
    return {
        "event_time": event_time,
        "user_tz": draw(st.sampled_from(ZONES)),
        "click_times": [event_time - offset for offset in offsets],
        "price": draw(price),
        "category": draw(category),
        "device": draw(st.sampled_from(DEVICES)),
        "ad_position": draw(st.integers(1, 10)),
    }
