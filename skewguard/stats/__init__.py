"""Statistics: the mergeable Profile and the two-sample tests and effect sizes. No I/O here.

A :class:`ProfileLayout` fitted on the reference fixes bins and vocabularies; every :class:`Profile` built
from it (training baseline, serving window, one partition's share of a window) merges exactly with the
others. The functions in :mod:`skewguard.stats.twosample` compare two samples or two binned sketches.
"""

from __future__ import annotations

from skewguard.stats.columns import (
    MAX_MAGNITUDE,
    CategoricalDomain,
    ColumnKind,
    ColumnRole,
    ColumnSpec,
    NumericDomain,
)
from skewguard.stats.profile import (
    CategoricalColumnLayout,
    CategoricalSketch,
    ColumnLayout,
    EncodedColumn,
    EncodedFrame,
    NumericColumnLayout,
    NumericSketch,
    Profile,
    ProfileLayout,
    Sketch,
    categorical_values,
    category_text,
)
from skewguard.stats.reservoir import Reservoir, row_priorities
from skewguard.stats.twosample import (
    ChiSquareResult,
    KSResult,
    ProportionTestResult,
    chi_square,
    js_distance,
    ks_binned,
    ks_exact,
    linf_distance,
    null_rate_change,
    out_of_domain_share,
    paired_bootstrap_interval,
    paired_bootstrap_standard_error,
    psi,
    unseen_category_share,
    wasserstein_binned,
    wasserstein_normalized,
)

__all__ = [
    "MAX_MAGNITUDE",
    "CategoricalColumnLayout",
    "CategoricalDomain",
    "CategoricalSketch",
    "ChiSquareResult",
    "ColumnKind",
    "ColumnLayout",
    "ColumnRole",
    "ColumnSpec",
    "EncodedColumn",
    "EncodedFrame",
    "KSResult",
    "NumericColumnLayout",
    "NumericDomain",
    "NumericSketch",
    "Profile",
    "ProfileLayout",
    "ProportionTestResult",
    "Reservoir",
    "Sketch",
    "categorical_values",
    "category_text",
    "chi_square",
    "js_distance",
    "ks_binned",
    "ks_exact",
    "linf_distance",
    "null_rate_change",
    "out_of_domain_share",
    "paired_bootstrap_interval",
    "paired_bootstrap_standard_error",
    "psi",
    "row_priorities",
    "unseen_category_share",
    "wasserstein_binned",
    "wasserstein_normalized",
]
