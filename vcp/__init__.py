"""VCP breakout scoring for Indian equities: the project's CLI and shared settings."""
