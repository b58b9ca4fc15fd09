"""Serving-stage shadow tallies of class models: exact agreement, mergeable, checkpointable."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from skewguard.shadow.compare import ShadowOptions, serving_findings
from skewguard.stats import CategoricalColumnLayout, ColumnKind, ColumnRole, ColumnSpec, js_distance
from skewguard.windows import ShadowTally


def test_class_tallies_count_agreement_and_merge_exactly() -> None:
    rng = np.random.default_rng(0)
    spec = ColumnSpec("prediction", ColumnKind.CATEGORICAL, ColumnRole.PREDICTION)
    layout = CategoricalColumnLayout.fit(spec, pd.Series(["a", "b", "c"] * 10), top_k=2, max_known=10)
    production = rng.choice(np.array(["a", "b", "c", "d"], dtype=object), 400)
    candidate = rng.choice(np.array(["a", "b", "c", "d"], dtype=object), 400)
    candidate[:40] = None  # dropped by the shadow queue
    whole, first, second = ShadowTally(), ShadowTally(), ShadowTally()
    whole.add_classes(production, candidate, layout)
    first.add_classes(production[:150], candidate[:150], layout)
    second.add_classes(production[150:], candidate[150:], layout)
    assert first.merge(second) == whole == second.merge(first)
    assert whole.classes and whole.missing == 40 and whole.compared == 360
    assert whole.agree == int((production[40:] == candidate[40:]).sum())
    # Bins as the baseline bins classes: a, b, then c (known, outside the top 2) as OTHER, d as UNSEEN.
    kept = production[40:]
    assert whole.production_hist == [int((kept == c).sum()) for c in ("a", "b", "c", "d")]
    assert ShadowTally.from_dict(whole.to_dict()) == whole
    older = {k: v for k, v in ShadowTally(compared=3, agree=2).to_dict().items() if k != "classes"}
    assert ShadowTally.from_dict(older) == ShadowTally(compared=3, agree=2)  # checkpoints before classes
    [finding] = serving_findings("v2", whole, ShadowOptions(max_missing_rate=0.05))
    assert finding.flagged  # 10 % of the candidate's predictions are missing
    assert finding.detail["agreement"] == pytest.approx(whole.agree / 360)
    assert finding.detail["correlation"] is None and finding.detail["mean_abs_difference"] is None
    assert finding.effect == pytest.approx(js_distance(whole.production_hist, whole.candidate_hist))


def test_tallies_survive_the_checkpoint_codec_whatever_the_values() -> None:
    """JSON has no inf: a sum of squares overflowed by one huge score, or an infinite skew difference,
    came back as null and the partition's checkpoint could no longer be restored."""
    from skewguard.store.sql import pack_state, unpack_state
    from skewguard.windows import SkewTally

    shadow = ShadowTally()
    production = np.array([0.2, 1e200, 0.7, np.inf])
    candidate = np.array([0.3, 0.5, 1e300, 0.1])
    shadow.add(production, candidate, np.array([0.5]))
    assert (shadow.compared, shadow.missing) == (1, 1)  # (a huge score counts as no score)
    assert ShadowTally.from_dict(unpack_state(pack_state(shadow.to_dict()))) == shadow

    skew = SkewTally()
    skew.add(3, ["r1"], float("inf"))  # (a logged 1e308 against a replayed -1e308)
    assert SkewTally.from_dict(unpack_state(pack_state(skew.to_dict()))) == skew
