"""Heads on a frozen backbone vs per-pixel baselines on real data, 3 seeds, mean ± std.

Tasks (one module each, all on ``../shared/data``):

* ``aber`` (:mod:`.aberystwyth`): Aberystwyth Sentinel-2 land cover, 4 classes, held-out blocks;
* ``nc`` (:mod:`.nc`): North Carolina Landsat 7 land cover, 1996 polygons -> 1996 points;
* ``chm`` (:mod:`.canopy`): Swiss orthophoto canopy height, held-out blocks; the same heads are
  also scored once, cross-site, on the Kootenay RGB + CHM of ``../shared/eval`` (never tuned on);
* ``change`` (:mod:`.change`): synthetic change trained on Aberystwyth, scored on held-out Rufiji;
* ``rufiji`` (:mod:`.rufiji`): change vs land-cover flips between two Rufiji dates (kappa).

Each task has three methods: the per-pixel baseline on the raw bands (:mod:`.baselines`), the
pretrained backbone (frozen) + DPT head with the image branch, and the same architecture randomly
initialised + the same head. Heads are trained by ``dinogeo.trainers`` on backbone features
cached per task and backbone (on disk under ``--work``, keyed by the backbone's weights and the
chip's pixels) and shared by the seeds. :mod:`.table` prints mean ± std over the seeds.

Run from the repository root::

    python -m bench.heads --backbone runs/bench_probe/backbone.safetensors
    python bench/heads --backbone FILE --tasks aber,chm --seeds 0,1,2
"""
