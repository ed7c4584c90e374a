"""Mean ± standard deviation over seeds of every (task, method), as a markdown table."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

# the metrics shown per task kind, the first one being the task's headline metric
# (``step``: the training step whose weights a head kept, best on its selection set)
KEYS = {
    "kappa": ["kappa", "lc_acc", "changed", "lc_flipped", "step"],
    "r2": ["r2", "mae", "rmse", "bias", "step"],
    "change_f1": ["change_f1", "change_iou", "accuracy", "step"],
    "miou": ["miou", "accuracy", "step"],
}


def metric_keys(row: dict) -> list[str]:
    """The metrics of a row's task kind, headline first."""
    for marker, keys in KEYS.items():
        if marker in row:
            return keys
    return [k for k in row if k not in ("task", "method", "seed")]


def summarise(rows: list[dict]) -> list[dict]:
    """One entry per (task, method) in first-seen order: seeds, and mean and std per metric."""
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r["task"], r["method"])].append(r)
    out = []
    for (task, method), group in groups.items():
        keys = metric_keys(group[0])
        stats = {}
        for k in keys:
            values = np.array([r[k] for r in group if k in r], dtype=np.float64)
            if len(values):
                stats[k] = (
                    float(values.mean()),
                    float(values.std(ddof=1)) if len(values) > 1 else 0.0,
                )
        out.append(
            {
                "task": task,
                "method": method,
                "seeds": sorted({r["seed"] for r in group}),
                "stats": stats,
            }
        )
    return out


def markdown(rows: list[dict]) -> str:
    """The markdown table: task, method, seeds, metrics as mean ± std (sample std over seeds)."""
    lines = ["| task | method | seeds | metrics (mean ± std over seeds) |", "|---|---|---|---|"]
    for entry in summarise(rows):
        text = ", ".join(f"{k} {m:.3f} ± {s:.3f}" for k, (m, s) in entry["stats"].items())
        seeds = ",".join(str(s) for s in entry["seeds"])
        lines.append(f"| {entry['task']} | {entry['method']} | {seeds} | {text} |")
    return "\n".join(lines)


def wide(rows: list[dict], pretrained: str, random: str, keys: int = 2) -> str:
    """One line per task: baseline, pretrained and random-init heads side by side (the first
    ``keys`` metrics of each, mean ± std over the seeds)."""
    by_task: dict[str, dict[str, dict]] = defaultdict(dict)
    for entry in summarise(rows):
        by_task[entry["task"]][entry["method"]] = entry
    lines = [
        f"| task | per-pixel baseline (raw bands) | {pretrained} + DPT head | {random} + DPT head |",
        "|---|---|---|---|",
    ]
    for task, methods in by_task.items():
        cells = []
        base = next((m for name, m in methods.items() if name.startswith("per-pixel")), None)
        for entry in (base, methods.get(pretrained), methods.get(random)):
            if entry is None:
                cells.append("-")
                continue
            stats = list(entry["stats"].items())[:keys]
            cells.append(", ".join(f"{k} {m:.3f} ± {s:.3f}" for k, (m, s) in stats))
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def verdicts(rows: list[dict], pretrained: str, random: str) -> str:
    """Per task: does each head match its baseline, and does pretraining beat random init by
    more than the seeds' std, on the headline metric (higher is better for all of them)."""
    by_task: dict[str, dict[str, dict]] = defaultdict(dict)
    for entry in summarise(rows):
        by_task[entry["task"]][entry["method"]] = entry
    lines = []
    for task, methods in by_task.items():
        if pretrained not in methods or random not in methods:
            continue
        key = next(iter(methods[pretrained]["stats"]))
        (pm, ps), (rm, rs) = methods[pretrained]["stats"][key], methods[random]["stats"][key]
        base = next((m for name, m in methods.items() if name.startswith("per-pixel")), None)
        text = f"{task}: {key} pretrained {pm:.3f} ± {ps:.3f} vs random {rm:.3f} ± {rs:.3f}"
        text += f" -> pretrained {'wins' if pm > rm else 'loses'}"
        text += f" ({'by more than' if abs(pm - rm) > max(ps, rs) else 'within'} the seeds' std)"
        if base is not None:
            bm = base["stats"][key][0]
            text += f"; baseline {bm:.3f}: pretrained {'>=' if pm >= bm else '<'}, random {'>=' if rm >= bm else '<'}"
        lines.append(text)
    return "\n".join(lines)


def report(rows: list[dict], pretrained: str, random: str) -> str:
    """The long table, the wide table and the verdicts, separated by blank lines."""
    return "\n\n".join(
        (markdown(rows), wide(rows, pretrained, random), verdicts(rows, pretrained, random))
    )


def main(argv: list[str] | None = None) -> None:
    """Print the table and verdicts of ``rows.json`` files from one or more runs (e.g. runs of
    task groups in parallel): ``python -m bench.heads.table A/rows.json B/rows.json``."""
    import argparse
    import json
    from pathlib import Path

    from .common import PRETRAINED, RANDOM

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("rows", nargs="+", type=Path)
    args = p.parse_args(argv)
    rows = [r for path in args.rows for r in json.loads(path.read_text())]
    print(report(rows, PRETRAINED, RANDOM))


if __name__ == "__main__":
    main()
