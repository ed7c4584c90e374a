"""``dinogeo validate``: metrics of :func:`evaluate_bundle` as a table or JSON.

Usage::

    dinogeo validate --model BUNDLE --image IMAGE --labels LABELS [--image2 DATE2]
        [--label-field FIELD] [--label-layer LAYER] [--label-crs CRS] [--point-radius PX]
        [--sensor S]
        [--bands B ...] [--scale X] [--offset Y] [--chip-size 256] [--json OUT.json]
        [--format table|json]
"""

from __future__ import annotations

import json as _json
import os
import tempfile
from pathlib import Path
from typing import Any, Literal

__all__ = ["run"]


def _table(metrics: dict[str, float]) -> str:
    width = max(len(k) for k in metrics)
    lines = [f"| {'metric':<{width}} | value |", f"|{'-' * (width + 2)}|-------|"]
    for key, value in metrics.items():
        text = f"{value:.0f}" if key in ("pixels", "chips") else f"{value:.4f}"
        lines.append(f"| {key:<{width}} | {text} |")
    return "\n".join(lines)


def run(
    options: dict[str, Any],
    *,
    backbone: str | None = None,
    json: str | None = None,
    format: Literal["table", "json"] = "table",
) -> int:
    """Load the bundle, compute its metrics on the labelled imagery and report them.

    Args:
        options: the keyword arguments of :func:`~dinogeo.trainers.evaluate.evaluate_bundle`.
        backbone: backbone file, when the bundle references one that moved.
        json: also write the metrics to this JSON file.
        format: print a table or JSON.

    Returns:
        The exit status (0 on success).
    """
    from dinogeo.models.bundle import load_bundle
    from dinogeo.trainers.evaluate import evaluate_bundle

    bundle = load_bundle(options["bundle"], backbone_path=backbone)
    metrics = evaluate_bundle(**{**options, "bundle": bundle})
    report = {"model": str(options["bundle"]), "task": bundle.task.name, "metrics": metrics}
    if json:
        out = Path(json)
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=out.name + ".", dir=out.parent)
        with os.fdopen(fd, "w") as handle:
            _json.dump(report, handle, indent=2)
        os.replace(tmp, out)
    if format == "json":
        print(_json.dumps(report, indent=2))
    else:
        print(f"{bundle.task.name} ({bundle.task.kind}) on {options['image']}")
        print(_table(metrics))
    return 0
