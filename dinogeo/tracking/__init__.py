"""Forest-loss tracking through dated image series: alerts, products and accuracy (docs/tracking.md)."""

from dinogeo.tracking.series import SeriesError, TimeSeries, open_series
from dinogeo.tracking.track import TrackResult, track_series

__all__ = ["SeriesError", "TimeSeries", "TrackResult", "open_series", "track_series"]
