"""City data fusion: connectors, zones, the fused cube, online learning, forecasts, backtests."""

__all__: list[str] = []
