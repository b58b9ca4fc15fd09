"""Test-session settings shared by every test module."""

from __future__ import annotations

import os

# Telemetry off before evidently / Great Expectations are imported anywhere.
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MPLBACKEND", "Agg")
