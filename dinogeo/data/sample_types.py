"""The sample and batch dicts that datasets, collate functions and trainers pass around, as TypedDicts.

Samples stay plain dicts at run time (torchgeo's convention, and what Lightning moves to the
device); these types name their keys for readers and for mypy.

* :class:`ChipSample` / :class:`ChipBatch`: unlabelled chips of
  :class:`~dinogeo.data.dataset.ChipDataset` and their collation by
  :func:`~dinogeo.data.dataset.collate_samples` (pretraining, statistics, embeddings).
* :class:`GeoSample`: a torchgeo query answered by :class:`~dinogeo.data.dataset.SourceGeoDataset`.
* :class:`LabeledSample`: a labelled chip of the head trainers (one image, or two dates for
  change), the same dict with a leading batch dimension once collated; the feature cache swaps
  the images for backbone features.
"""

from typing import NotRequired, TypedDict

from rasterio.coords import BoundingBox
from rasterio.crs import CRS
from torch import Tensor

__all__ = ["ChipBatch", "ChipSample", "GeoSample", "LabeledSample"]


class ChipSample(TypedDict):
    """One chip read from a source.

    Attributes:
        image: float32 ``(C, h, w)`` normalised values, invalid pixels 0.
        valid: bool ``(h, w)`` mask of valid pixels.
        crs: the source's CRS.
        bounds: the chip's bounds in ``crs`` units.
        path: the source's path.
    """

    image: Tensor
    valid: Tensor
    crs: CRS
    bounds: BoundingBox
    path: str


class ChipBatch(TypedDict):
    """Chips collated by :func:`~dinogeo.data.dataset.collate_samples`.

    Attributes:
        image: float32 ``(B, C, h, w)``.
        valid: bool ``(B, h, w)``.
        crs: one CRS per chip.
        bounds: one bounding box per chip.
        path: one source path per chip.
    """

    image: Tensor
    valid: Tensor
    crs: list[CRS]
    bounds: list[BoundingBox]
    path: list[str]


class GeoSample(TypedDict):
    """torchgeo 0.10 sample of :class:`~dinogeo.data.dataset.SourceGeoDataset` (all tensors).

    Attributes:
        image: float32 ``(C, h, w)`` mosaic of the sources, invalid pixels 0.
        valid: bool ``(h, w)``.
        bounds: the query's ``(xmin, xmax, ymin, ymax, tmin, tmax)`` as torchgeo encodes it.
        transform: the affine coefficients of the sample's grid.
    """

    image: Tensor
    valid: Tensor
    bounds: Tensor
    transform: Tensor


class LabeledSample(TypedDict):
    """A labelled chip (or, collated, a batch of them) for the head trainers.

    Exactly one input group is present: ``image`` (segmentation, regression), ``image1`` and
    ``image2`` (change), or, from the feature cache, ``features`` / ``features1`` and
    ``features2`` instead of the images.

    Attributes:
        mask: the target ``(h, w)``: int64 class indices (``IGNORE_INDEX`` where unlabelled or
            invalid) or float values (NaN where missing).
        valid: bool ``(h, w)`` mask of pixels valid in every input date.
        image: float32 ``(C, h, w)`` normalised image.
        image1: the first date of a change pair.
        image2: the second date of a change pair.
        features: cached backbone features of ``image``, one map per backbone level.
        features1: cached features of ``image1``.
        features2: cached features of ``image2``.
    """

    mask: Tensor
    valid: Tensor
    image: NotRequired[Tensor]
    image1: NotRequired[Tensor]
    image2: NotRequired[Tensor]
    features: NotRequired[list[Tensor]]
    features1: NotRequired[list[Tensor]]
    features2: NotRequired[list[Tensor]]
