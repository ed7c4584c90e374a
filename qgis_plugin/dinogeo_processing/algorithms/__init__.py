"""The dinogeo Processing algorithms (one per dinogeo subcommand)."""

from .adapt import AdaptAlgorithm
from .embed import EmbedAlgorithm
from .fit import FitAlgorithm
from .predict import PredictAlgorithm
from .track import TrackAlgorithm
from .validate import ValidateAlgorithm

ALGORITHMS = [
    PredictAlgorithm,
    EmbedAlgorithm,
    FitAlgorithm,
    ValidateAlgorithm,
    TrackAlgorithm,
    AdaptAlgorithm,
]
