"""Command line of the heads benchmark: ``python -m bench.heads`` or ``python bench/heads``."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

if __package__ in (None, ""):  # ``python bench/heads``: import the package from the repository
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    __package__ = "bench.heads"

import torch  # noqa: E402

from dinogeo._paths import shared_data_dir  # noqa: E402

from . import aberystwyth, canopy, change, nc, rufiji  # noqa: E402
from .common import PRETRAINED, RANDOM, Settings, random_twin  # noqa: E402
from .table import markdown, report  # noqa: E402

TASKS = ("aber", "nc", "chm", "change", "rufiji")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """The command-line options."""
    doc = (sys.modules[__package__].__doc__ or "").splitlines()[0]
    p = argparse.ArgumentParser(prog="python -m bench.heads", description=doc)
    p.add_argument(
        "--backbone",
        default=os.environ.get("DINOGEO_BACKBONE"),
        required="DINOGEO_BACKBONE" not in os.environ,
        help="pretrained backbone file (also $DINOGEO_BACKBONE)",
    )
    p.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated, of {TASKS}")
    p.add_argument("--seeds", default="0,1,2", help="head seeds (comma-separated)")
    p.add_argument(
        "--backbones",
        default="pretrained,random",
        help="which backbones to train heads on: pretrained, random (its architecture randomly "
        "initialised) or both; groups run apart are joined by bench.heads.table",
    )
    p.add_argument("--steps", type=int, default=300, help="training steps per head")
    p.add_argument(
        "--select-fraction",
        type=float,
        default=0.2,
        help="share of the training chips (whole blocks) held out to keep each head's best step "
        "(0: keep the last step)",
    )
    p.add_argument("--select-every", type=int, default=25, help="steps between selection scores")
    p.add_argument(
        "--ema",
        type=float,
        default=0.95,
        help="decay of the moving average of the head weights that selection scores and keeps "
        "(0: the raw weights of each step)",
    )
    p.add_argument(
        "--feature-linear",
        choices=("config", "on", "off"),
        default="config",
        help="land-cover and canopy heads with the linear probe of the frozen features inside, "
        "started with the bands at their joint linear probe (LP-FT); config: as each task's "
        "config in configs/finetune says",
    )
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--features", type=int, default=32, help="DPT width")
    p.add_argument("--crop", type=int, default=32, help="training crop of the cached chips")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--shared", default=str(shared_data_dir()), help="../shared/data")
    p.add_argument(
        "--eval",
        default=str(Path(shared_data_dir()).parent / "eval"),
        help="the evaluation-only folder (Kootenay cross-site canopy height); 'none' skips it",
    )
    p.add_argument(
        "--work", default="bench/_work/heads", help="feature cache and adapted backbones"
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Run the chosen tasks and print the table."""
    args = parse(argv)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    tasks = [t for t in args.tasks.split(",") if t]
    unknown = set(tasks) - set(TASKS)
    if unknown:
        raise SystemExit(f"unknown task(s) {sorted(unknown)}: choose from {TASKS}")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    start = time.time()
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        chosen = [b for b in args.backbones.split(",") if b]
        if not chosen or set(chosen) - {"pretrained", "random"}:
            raise SystemExit(f"--backbones takes pretrained and/or random, got {args.backbones!r}")
        backbones = {PRETRAINED: args.backbone} if "pretrained" in chosen else {}
        if "random" in chosen:
            backbones[RANDOM] = random_twin(args.backbone, Path(tmp))
        seeds = [int(s) for s in args.seeds.split(",")]
        fits = len(tasks) + ("rufiji" in tasks and "change" not in tasks)
        settings = Settings(
            shared=Path(args.shared),
            work=work,
            backbones=backbones,
            seeds=seeds,
            steps=args.steps,
            batch_size=args.batch_size,
            features=args.features,
            crop=args.crop or None,
            select_fraction=args.select_fraction,
            select_every=args.select_every,
            ema=args.ema,
            feature_linear=None if args.feature_linear == "config" else args.feature_linear == "on",
            fits_total=fits * len(backbones) * len(seeds),
        )
        rows: list[dict] = []

        def done(new: list[dict]) -> None:  # print each task's rows as soon as they exist
            rows.extend(new)
            print("\n" + markdown(new) + "\n", flush=True)
            (work / "rows.json").write_text(json.dumps(rows, indent=1))

        if "aber" in tasks:
            done(aberystwyth.run(settings))
        if "nc" in tasks:
            done(nc.run(settings))
        if "chm" in tasks:
            eval_dir = None if args.eval == "none" else Path(args.eval)
            done(canopy.run(settings, eval_dir))
        if "change" in tasks or "rufiji" in tasks:
            change_rows, heads = change.run(settings)
            if "change" in tasks:
                done(change_rows)
            if "rufiji" in tasks:
                done(rufiji.run(settings, heads))
    print(
        f"\nbackbone {args.backbone}: heads on {' and '.join(backbones)}; "
        f"seeds {seeds}; {args.steps} steps x batch {args.batch_size} per head on cached "
        f"features; {args.threads} thread(s); total {time.time() - start:.0f} s wall, "
        f"{time.process_time():.0f} s CPU\n"
    )
    print(report(rows, PRETRAINED, RANDOM))


if __name__ == "__main__":
    main()
