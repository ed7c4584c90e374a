"""Which chips of labelled scenes train and which validate: spatial blocks, labelled chips.

:func:`select_chips` cuts each scene's grid into blocks, assigns whole blocks to validation
(weighted by labelled or positive pixels) and keeps the chips inside one block that hold enough
labels over valid imagery; :func:`hold_out_blocks` takes whole blocks of the training chips out
as a selection set.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from rasterio.windows import Window

from dinogeo.labels.split import BlockSplit, ChipSplit, block_split, chip_windows
from dinogeo.trainers.chip_dataset import Chip
from dinogeo.trainers.chip_labels import Labels
from dinogeo.trainers.imagery import Scene, scene_grid, scene_valid

__all__ = ["hold_out_blocks", "select_chips"]


def hold_out_blocks(chips: list[Chip], split: ChipSplit) -> tuple[list[Chip], list[Chip]]:
    """Split training chips by whole blocks into (fitting chips, selection chips).

    Chips never cross a block border (:func:`~dinogeo.labels.split.chip_windows`), so the two
    sets share no pixel. Blocks of ``split.block_size`` are drawn in an order seeded by
    ``split.seed`` until ``split.select_fraction`` of the chips is held out (at least one block
    stays for fitting); of a held-out block only the chips on a ``split.chip_size`` grid are
    kept (a selection set needs no overlapping chips).
    """
    block_size, chip_size, fraction = split.block_size, split.chip_size, split.select_fraction
    blocks: dict[tuple[int, int, int], list[Chip]] = {}
    for chip in chips:
        blocks.setdefault(_block(chip, block_size), []).append(chip)
    keys = sorted(blocks)
    order = [keys[i] for i in np.random.default_rng((split.seed, 1)).permutation(len(keys))]
    held: set[tuple[int, int, int]] = set()
    count = 0
    for key in order:
        if count >= fraction * len(chips) or len(held) >= len(keys) - 1:
            break
        held.add(key)
        count += len(blocks[key])
    fit = [c for c in chips if _block(c, block_size) not in held]
    select: list[Chip] = []
    for key in sorted(held):
        inside = blocks[key]
        grid = [
            c
            for c in inside
            if (int(c.window.row_off) - key[1] * block_size) % chip_size == 0
            and (int(c.window.col_off) - key[2] * block_size) % chip_size == 0
        ]
        select.extend(grid or inside)
    return fit, select


def _block(chip: Chip, block_size: int) -> tuple[int, int, int]:
    return (
        chip.scene,
        int(chip.window.row_off) // block_size,
        int(chip.window.col_off) // block_size,
    )


def select_chips(
    readers: Sequence[Scene],
    labels: Sequence[Labels],
    split: ChipSplit,
    *,
    min_labelled: int,
    train_stride: int,
    all_to_val: bool = False,
    split_by: str = "labelled",
    splits_out: list[BlockSplit] | None = None,
) -> tuple[list[Chip], list[Chip]]:
    """Split each scene into blocks and pick chips with labels over valid imagery.

    Args:
        readers: one scene per label set.
        labels: the labels of each scene.
        split: chip and block sizes, validation share and seed (``select_fraction`` is
            :func:`hold_out_blocks`'s).
        min_labelled: labelled pixels over valid imagery a chip (and a block) needs.
        train_stride: stride of training chip positions inside a block.
        all_to_val: every block is a validation block (validation labels, evaluation).
        split_by: what the validation share counts: ``"labelled"`` or ``"positive"`` pixels.
        splits_out: receives each scene's :class:`~dinogeo.labels.split.BlockSplit`.

    Returns:
        ``(train chips, validation chips)``; validation chips do not overlap (stride = chip).
    """
    chip_size, block_size = split.chip_size, split.block_size
    train: list[Chip] = []
    val: list[Chip] = []
    for scene, (reader, lab) in enumerate(zip(readers, labels, strict=True)):
        grid = scene_grid(reader)
        rows, cols = -(-grid.height // block_size), -(-grid.width // block_size)
        counts = np.zeros((rows, cols))
        weights = np.zeros((rows, cols))
        masks: dict[tuple[int, int], tuple[Window, np.ndarray]] = {}
        probe = block_split(grid.width, grid.height, block_size=block_size, val_fraction=0.0)
        for b in probe.blocks("all"):
            win = probe.block_window(b)
            # read a chip-size-padded window so edge chips running past the image are counted
            padded = Window(
                win.col_off, win.row_off, max(win.width, chip_size), max(win.height, chip_size)
            )
            values = lab.read(padded)
            ok = lab.labelled(values) & scene_valid(reader, padded)
            counts[b] = ok.sum()
            core = ok[: int(win.height), : int(win.width)]  # the block itself, not the padding
            if split_by == "positive":
                weights[b] = (
                    core & (np.nan_to_num(values[: core.shape[0], : core.shape[1]]) > 0)
                ).sum()
            else:
                weights[b] = core.sum()
            masks[b] = (padded, ok)
        blocks = block_split(
            grid.width,
            grid.height,
            block_size=block_size,
            val_fraction=split.val_fraction,
            seed=split.seed,
            weights=weights,
        )
        if splits_out is not None:
            splits_out.append(blocks)
        for b in blocks.blocks("all"):
            if counts[b] < min_labelled:
                continue
            is_val = all_to_val or b in blocks.val_blocks
            stride = chip_size if is_val else train_stride
            padded, ok = masks[b]
            for w in chip_windows(blocks.block_window(b), chip_size, stride):
                r, c = int(w.row_off - padded.row_off), int(w.col_off - padded.col_off)
                if ok[r : r + chip_size, c : c + chip_size].sum() >= min_labelled:
                    (val if is_val else train).append(Chip(scene, w))
    return train, val
