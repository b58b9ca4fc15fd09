"""One synthetic baseline shared by the detection tests: 100k reference rows, 50k held out."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from skewguard.detect import Calibration
from skewguard.stats import Profile, ProfileLayout
from tests.detect import synthetic

WINDOW = 5000


@dataclass(frozen=True)
class World:
    layout: ProfileLayout
    baseline: Profile
    calibration: Calibration


@pytest.fixture(scope="session")
def world() -> World:
    rng = np.random.default_rng(2024)
    reference = synthetic.draw(100_000, rng)
    holdout = synthetic.draw(50_000, rng)  # rows the baseline never sees
    layout = ProfileLayout.fit(reference, synthetic.specs())
    baseline = layout.profile(reference)
    calibration = Calibration.from_holdout(baseline, holdout, window_size=WINDOW, seed=1)
    return World(layout, baseline, calibration)
