"""Pure, vectorized feature extraction for VCP breakout scoring (numpy only)."""

from features.labels import (
    LabelParams,
    LabelResult,
    TradeParams,
    TradeResult,
    breakout_trades,
    setup_trades,
    triple_barrier_labels,
)
from features.vector import (
    FEATURE_DOCS,
    FEATURES,
    FeaturePanel,
    FeatureResult,
    compute_features_all,
    compute_features_at,
)

__all__ = [
    "TradeParams",
    "TradeResult",
    "breakout_trades",
    "setup_trades",
    "FEATURES",
    "FEATURE_DOCS",
    "FeaturePanel",
    "FeatureResult",
    "LabelParams",
    "LabelResult",
    "compute_features_all",
    "compute_features_at",
    "triple_barrier_labels",
]
