"""Multi-resolution crop mixes: one (global, local, Gram) size triple per batch.

DINOv3's high-resolution adaptation mixes several crop resolutions
(``crops.global_local_crop_pairs_ratios`` with lists of ``global_crops_size``,
``local_crops_size`` and ``gram_teacher_crops_size``): each batch comes from one loader, picked
with the given ratios. :class:`CropMix` does the same inside one loader: the size triple of a
batch is a pure function of ``(seed, epoch, batch index)``, so the DataLoader workers agree on it
within a batch, every DDP rank uses the same sizes at the same step (balanced step times), and a
run resumed mid-epoch continues with exactly the same sequence.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dinogeo.errors import ConfigError
from dinogeo.ssl.checkpointing import sample_seed

__all__ = ["CropMix", "CropMixEntry"]

# mixed into the seed of every choice so it never coincides with a per-sample seed
_TAG = 0x63726F706D6978  # "cropmix"
_FIELDS = ("global_size", "local_size", "gram_size", "weight")


@dataclass(frozen=True)
class CropMixEntry:
    """One resolution of a crop mix.

    Args:
        global_size: Side of the two global crops (multiple of the patch size).
        local_size: Side of the local crops (multiple of the patch size).
        gram_size: Side of the Gram-teacher crops, or ``None`` for none (all entries of a mix
            give one, or none does).
        weight: Relative frequency of this resolution (> 0; normalised over the mix).
    """

    global_size: int
    local_size: int
    gram_size: int | None = None
    weight: float = 1.0

    @property
    def largest(self) -> int:
        """The largest crop side this entry cuts from a chip (Gram or global)."""
        return max(self.global_size, self.gram_size or 0)


def _entry(item: CropMixEntry | Mapping[str, Any], index: int) -> CropMixEntry:
    if isinstance(item, CropMixEntry):
        return item
    if not isinstance(item, Mapping):
        raise ConfigError(
            f"data.crop_mix[{index}]={item!r} is not a mapping: give "
            "{global_size: G, local_size: L, gram_size: S, weight: W}"
        )
    unknown = set(item) - set(_FIELDS)
    if unknown or "global_size" not in item or "local_size" not in item:
        raise ConfigError(
            f"data.crop_mix[{index}]={dict(item)!r}: expected the keys global_size and "
            f"local_size, optionally gram_size and weight (unknown: {sorted(unknown)})"
        )
    gram = item.get("gram_size")
    return CropMixEntry(
        global_size=int(item["global_size"]),
        local_size=int(item["local_size"]),
        gram_size=None if gram is None else int(gram),
        weight=float(item.get("weight", 1.0)),
    )


class CropMix:
    """A weighted list of crop resolutions and the deterministic choice of one per batch.

    Args:
        entries: The resolutions (:class:`CropMixEntry` or mappings with the same keys).
        patch_size: Backbone patch size; every crop side must be a multiple of it.

    Raises:
        ConfigError: Empty mix, non-positive or non-finite weight, a size that is not a
            positive multiple of ``patch_size``, or Gram crops in some entries only.
    """

    def __init__(
        self, entries: Sequence[CropMixEntry | Mapping[str, Any]], patch_size: int
    ) -> None:
        if isinstance(entries, (str, bytes, Mapping)) or not entries:
            raise ConfigError(
                "data.crop_mix must be a non-empty list of "
                "{global_size, local_size, gram_size, weight} entries, or null for one size"
            )
        self.entries: tuple[CropMixEntry, ...] = tuple(
            _entry(item, i) for i, item in enumerate(entries)
        )
        for i, entry in enumerate(self.entries):
            if not math.isfinite(entry.weight) or entry.weight <= 0:
                raise ConfigError(
                    f"data.crop_mix[{i}].weight={entry.weight} must be a finite number > 0: "
                    "remove the entry instead of giving it weight 0"
                )
            sizes = {"global_size": entry.global_size, "local_size": entry.local_size}
            if entry.gram_size is not None:
                sizes["gram_size"] = entry.gram_size
            for name, size in sizes.items():
                if size < patch_size or size % patch_size:
                    fix = max(patch_size, size // patch_size * patch_size)
                    raise ConfigError(
                        f"data.crop_mix[{i}].{name}={size} is not a positive multiple of the "
                        f"patch size {patch_size}: use e.g. {fix}"
                    )
        with_gram = [e.gram_size is not None for e in self.entries]
        if any(with_gram) and not all(with_gram):
            raise ConfigError(
                f"data.crop_mix: gram_size is set in entries "
                f"{[i for i, g in enumerate(with_gram) if g]} only: give a gram_size to every "
                "entry (1.5-2x its global_size) or to none"
            )
        total = sum(e.weight for e in self.entries)
        self.probabilities: tuple[float, ...] = tuple(e.weight / total for e in self.entries)
        cumulative, acc = [], 0.0
        for p in self.probabilities:
            acc += p
            cumulative.append(acc)
        cumulative[-1] = 1.0
        self._cumulative = tuple(cumulative)

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def has_gram(self) -> bool:
        """Whether the entries carry Gram-teacher crops."""
        return self.entries[0].gram_size is not None

    @property
    def largest(self) -> int:
        """The largest crop side of the mix: the smallest chip that covers every entry."""
        return max(e.largest for e in self.entries)

    def choose(self, seed: int, epoch: int, batch: int) -> int:
        """Index of the entry used by batch ``batch`` of epoch ``epoch``.

        A pure function of its arguments (not of the worker, the rank or the time of call).

        Args:
            seed: The data seed.
            epoch: The epoch.
            batch: The batch index within the epoch (on every rank).

        Returns:
            An index into :attr:`entries`, drawn with :attr:`probabilities`.
        """
        u = sample_seed(seed, epoch, batch, _TAG) / float(1 << 63)
        for index, bound in enumerate(self._cumulative):
            if u < bound:
                return index
        return len(self._cumulative) - 1

    def to_config(self) -> list[dict[str, Any]]:
        """The entries as plain dicts (for hyperparameters and checkpoints)."""
        return [dataclasses.asdict(e) for e in self.entries]
