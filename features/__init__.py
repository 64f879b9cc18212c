"""Pure, vectorized feature extraction for VCP breakout scoring (numpy only)."""

from features.labels import (
    TradeParams,
    TradeResult,
    breakout_trades,
    setup_trades,
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
    "compute_features_all",
    "compute_features_at",
]
