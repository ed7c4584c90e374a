"""Best-on-selection training (dinogeo.trainers.selection) and the selection splits it scores on,
on the real Aberystwyth scene."""

import math

import numpy as np
import pytest
import torch
from lightning.pytorch import Callback
from rasterio.windows import Window

from dinogeo.cli.main import main
from dinogeo.errors import ConfigError
from dinogeo.labels.split import ChipSplit
from dinogeo.models.bundle import load_bundle
from dinogeo.trainers.chip_selection import hold_out_blocks
from dinogeo.trainers.feature_cache import CachedFeatureDataModule, FeatureCache
from dinogeo.trainers.selection import BestOnSelection, selection_score
from tests.trainers.conftest import TINY, localise


def _aber(aber_data, **extra):
    return aber_data(block_size=64, train_stride=16, **extra)


def _cached(aber_data, tmp_path, task, **extra):
    data = CachedFeatureDataModule(
        _aber(aber_data, select_fraction=0.25, **extra),
        FeatureCache(task.model, tmp_path),
        batch_size=4,
        steps_per_epoch=6,
        pool_size=48,
        log=None,
    )
    data.setup("fit")
    return data


def _block_of(chip, size):
    return chip.scene, int(chip.window.row_off) // size, int(chip.window.col_off) // size


def test_selection_blocks_share_no_pixel_with_the_fitting_chips(aber_data):
    plain, held = _aber(aber_data), _aber(aber_data, select_fraction=0.25)
    plain.setup("fit")
    held.setup("fit")
    fit_blocks = {_block_of(c, 64) for c in held.train_set.chips}
    select_blocks = {_block_of(c, 64) for c in held.select_set.chips}
    assert fit_blocks and select_blocks and not fit_blocks & select_blocks
    # every selection chip lies inside its block (no pixel of a fitting block)
    for chip in held.select_set.chips:
        _, r, c = _block_of(chip, 64)
        assert r * 64 <= chip.window.row_off and chip.window.row_off + 32 <= (r + 1) * 64
        assert c * 64 <= chip.window.col_off and chip.window.col_off + 32 <= (c + 1) * 64
    # carved from the training blocks only: the validation chips do not change
    assert [c.window for c in held.val_set.chips] == [c.window for c in plain.val_set.chips]
    taken = len(plain.train_set.chips) - len(held.train_set.chips)
    assert 0.25 * len(plain.train_set.chips) <= taken < 0.5 * len(plain.train_set.chips)
    # the selection chips do not overlap each other (chip-size grid)
    windows = {(int(c.window.row_off), int(c.window.col_off)) for c in held.select_set.chips}
    assert len(windows) == len(held.select_set.chips)
    assert all((r % 32, c % 32) == (0, 0) for r, c in windows)
    assert plain.select_dataloader() is None and held.select_dataloader() is not None


def test_hold_out_blocks_keeps_one_block_for_fitting(aber_data):
    data = _aber(aber_data)
    data.setup("fit")
    chips = data.train_set.chips
    fit, select = hold_out_blocks(
        chips, ChipSplit(chip_size=32, block_size=64, select_fraction=0.99)
    )
    assert fit and select
    with pytest.raises(ConfigError, match="select_fraction"):
        _aber(aber_data, select_fraction=1.0)


def test_synthetic_change_selection_area_is_outside_the_training_area(aber_change_data):
    data = aber_change_data(val_chips=8, select_fraction=0.25)
    data.setup("fit")
    train = {(i, r, c) for i, r, c in data.train_set.anchors}
    select = {(i, r, c) for i, r, c in data.select_set.anchors}
    val = {(i, r, c) for i, r, c in data.val_set.anchors}
    assert train and select and not train & select and not select & val

    def covered(anchors):
        out = np.zeros((600, 600), bool)
        for _, r, c in anchors:
            out[r : r + 32, c : c + 32] = True
        return out

    assert not (covered(train) & covered(select)).any()
    assert not (covered(val) & covered(select)).any()
    batch = next(iter(data.select_dataloader()))
    assert batch["mask"].shape == (8, 32, 32) and batch["mask"].any()


def test_best_on_selection_restores_the_initial_weights_when_training_only_hurts(
    aber_data, make_task, quiet_trainer, tmp_path
):
    # an absurd learning rate wrecks the head at the first step: the per-pixel start (step 0)
    # must be what the fit returns, bit for bit
    task = make_task(lr=50.0)
    data = _cached(aber_data, tmp_path, task)
    select = BestOnSelection(every=2)
    trainer = quiet_trainer(6, callbacks=[select])
    start: dict[str, torch.Tensor] = {}

    class Snapshot(Callback):  # the weights right after pixel_init, before any step
        def on_train_start(self, trainer, module):
            start.update({k: v.clone() for k, v in module.state_dict().items()})

    trainer.callbacks.append(Snapshot())
    trainer.fit(task, data)
    steps = [s for s, _ in select.history]
    assert steps == [0, 2, 4, 6]
    assert select.best_step == 0
    assert max(score for _, score in select.history[1:]) < select.history[0][1]
    state = task.state_dict()
    assert all(torch.equal(state[k], v) for k, v in start.items())
    assert math.isclose(
        selection_score(task, data.select_dataloader(), "miou"), select.history[0][1]
    )


def test_best_on_selection_keeps_a_trained_step_when_training_helps(
    aber_data, make_task, quiet_trainer, tmp_path
):
    # without the per-pixel start the head begins at chance; a few steps beat that
    task = make_task(pixel_linear=False, pixel_init=False, lr=1e-2)
    data = _cached(aber_data, tmp_path, task)
    select = BestOnSelection(every=5)
    quiet_trainer(15, callbacks=[select]).fit(task, data)
    assert select.best_step > 0 and select.best_score > select.history[0][1]
    assert math.isclose(selection_score(task, data.select_dataloader(), "miou"), select.best_score)


def test_best_on_selection_without_a_selection_set_says_how_to_get_one(
    aber_data, make_task, quiet_trainer
):
    task = make_task()
    data = CachedFeatureDataModule(
        _aber(aber_data), FeatureCache(task.model), steps_per_epoch=2, pool_size=8, log=None
    )
    with pytest.raises(ConfigError, match="select_fraction"):
        quiet_trainer(2, callbacks=[BestOnSelection(every=1)]).fit(task, data)
    with pytest.raises(ConfigError, match="every"):
        BestOnSelection(every=0)


def test_dinogeo_fit_selects_with_a_callback_and_records_it_in_the_bundle(shared_data, tmp_path):
    config = localise("land_cover_aberystwyth", shared_data, tmp_path)
    select = tmp_path / "select.yaml"
    select.write_text(
        "trainer:\n  callbacks:\n    - class_path: dinogeo.trainers.BestOnSelection\n"
        "      init_args: {every: 1}\ndata:\n  init_args: {select_fraction: 0.2}\n"
    )
    bundle = tmp_path / "aber.safetensors"
    args = ["fit", "--config", str(config), "--config", str(select), *TINY]
    assert main([*args, "--bundle_path", str(bundle)]) == 0
    record = load_bundle(bundle).training_config["selection"]
    assert [step for step, _ in record["history"]] == [0, 1, 2]
    assert record["metric"] == "miou" and record["best_step"] in (0, 1, 2)


VIRGINIA = "sentinel2-l1c-virginia-sattestdata/S2_18SVG_20160112_20m_10band_crop.tif"
RUFIJI = "sentinel2-timeseries-rufiji-rsgislib/SEN2_20160710_T37MEM_20m_10band.tif"


def _change(aber_change_data, shared_data, **extra):
    return aber_change_data(val_images=[str(shared_data / RUFIJI)], val_chips=8, **extra)


def test_synthetic_change_selection_pairs_from_another_scene_and_sensor(
    aber_change_data, shared_data
):
    data = _change(
        aber_change_data,
        shared_data,
        select_images=[str(shared_data / VIRGINIA)],
        select_sensor="sentinel2_l1c",
    )
    data.setup("fit")
    # the selection pairs (and their donors) come from the Virginia L1C tile only
    assert [str(r.path) for r in data.select_set.readers] == [str(shared_data / VIRGINIA)]
    # read as L1C top-of-atmosphere x 10000 (scale 1e-4, its own band order), not with the
    # training images' x 1000 scale: normalised values stay within a few std of the card's mean
    image, valid = data.select_set.readers[0].read(Window(0, 0, 64, 64))
    assert valid.all() and np.abs(image.mean(axis=(1, 2))).max() < 3.0
    # the training area keeps the whole training scene (no blocks held out)
    plain = _change(aber_change_data, shared_data)
    plain.setup("fit")
    assert data.train_set.anchors == plain.train_set.anchors
    batch = next(iter(data.select_dataloader()))
    assert batch["mask"].shape == (8, 32, 32) and batch["mask"].any()
    again = _change(
        aber_change_data,
        shared_data,
        select_images=[str(shared_data / VIRGINIA)],
        select_sensor="sentinel2_l1c",
    )
    again.setup("fit")
    assert torch.equal(next(iter(again.select_dataloader()))["image2"], batch["image2"])


def test_synthetic_change_selection_images_refuse_the_test_scene_and_a_second_set(
    aber_change_data, shared_data
):
    with pytest.raises(ConfigError, match="select_images .* also training or validation"):
        _change(aber_change_data, shared_data, select_images=[str(shared_data / RUFIJI)])
    with pytest.raises(ConfigError, match="select_fraction"):
        _change(
            aber_change_data,
            shared_data,
            select_images=[str(shared_data / VIRGINIA)],
            select_fraction=0.2,
        )
    with pytest.raises(ConfigError, match="without select_images"):
        _change(aber_change_data, shared_data, select_sensor="sentinel2_l1c")


def test_best_on_selection_scores_and_keeps_the_moving_average_of_the_weights(
    aber_data, make_task, quiet_trainer, tmp_path
):
    task = make_task(pixel_linear=False, pixel_init=False, lr=1e-2)
    data = _cached(aber_data, tmp_path, task)
    trained = [n for n, p in task.named_parameters() if p.requires_grad]
    raw: list[dict[str, torch.Tensor]] = []

    class Record(Callback):  # the raw weights before the first step and after every step
        def on_train_start(self, trainer, module):
            raw.append(
                {n: p.detach().clone() for n, p in module.named_parameters() if n in trained}
            )

        def on_train_batch_end(self, trainer, module, *args):
            raw.append(
                {n: p.detach().clone() for n, p in module.named_parameters() if n in trained}
            )

    select = BestOnSelection(every=5, ema=0.8)
    trainer = quiet_trainer(15, callbacks=[Record(), select])
    trainer.fit(task, data)
    assert [s for s, _ in select.history] == [0, 5, 10, 15]
    average = {n: v.clone() for n, v in raw[0].items()}
    averages = [average]
    for weights in raw[1:]:
        average = {n: 0.8 * average[n] + 0.2 * weights[n] for n in trained}
        averages.append(average)
    assert select.best_step > 0
    state = task.state_dict()
    kept = averages[select.best_step]
    assert all(torch.allclose(state[n], kept[n], atol=1e-6) for n in trained)
    # the average, not the raw weights of that step
    assert any(not torch.allclose(state[n], raw[select.best_step][n], atol=1e-4) for n in trained)
    # every score in the history is the average's at that step
    for step, score in select.history:
        with torch.no_grad():
            for n, p in task.named_parameters():
                if n in trained:
                    p.copy_(averages[step][n])
        assert math.isclose(
            selection_score(task, data.select_dataloader(), "miou"), score, rel_tol=1e-5
        )
    with pytest.raises(ConfigError, match="ema"):
        BestOnSelection(ema=1.0)
