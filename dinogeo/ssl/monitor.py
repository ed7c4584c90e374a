"""Training health: collapse indicators, a collapse alarm, a kNN probe and curve plots.

The indicators are computed by :class:`~dinogeo.ssl.module.SSLTask` on every step from the
teacher's outputs and logged under ``health/``:

* ``teacher_entropy``: mean entropy (nats) of the teacher's softmax over the prototypes. It
  falls towards 0 when every image is sent to one prototype and stays at ``log K`` when the
  teacher outputs are uniform; ``teacher_entropy_norm`` is the same divided by ``log K``
  (1 = uniform); ``target_entropy`` is the entropy of the Sinkhorn-Knopp targets.
* ``embedding_std``: standard deviation across the batch of the L2-normalised cls features,
  averaged over dimensions and multiplied by ``sqrt(D)`` (about 1 for well-spread features,
  0 for a collapsed representation).
* ``mean_cosine``: mean pairwise cosine similarity of the cls features (1 when collapsed).

:class:`CollapseMonitor` raises an alarm (warning, ``health/collapse`` = 1 and optionally a
stop) when the indicators stay in the collapsed range for ``patience`` steps: collapsed features,
or uniform teacher targets (the other way DINO fails: every image gets the same flat target, the
DINO and iBOT losses sit at ``log K`` and the heads learn nothing).
"""

from __future__ import annotations

import csv
import logging
import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import Tensor

from dinogeo.errors import ConfigError

__all__ = [
    "CollapseMonitor",
    "KNNProbe",
    "embedding_health",
    "knn_accuracy",
    "mean_entropy",
    "plot_training_curves",
    "read_metrics",
]

log = logging.getLogger(__name__)


@torch.no_grad()
def mean_entropy(probs: Tensor) -> Tensor:
    """Mean entropy (nats) of the rows of a probability matrix ``(N, K)``."""
    p = probs.float().clamp_min(1e-12)
    return -(p * p.log()).sum(dim=-1).mean()


@torch.no_grad()
def embedding_health(features: Tensor) -> dict[str, Tensor]:
    """Collapse indicators of a batch of features ``(N, D)``.

    Args:
        features: cls features (any scale; they are L2-normalised here).

    Returns:
        ``{"embedding_std": std * sqrt(D), "mean_cosine": mean off-diagonal cosine}``.
    """
    if features.dim() != 2 or features.shape[0] < 2:
        raise ConfigError(
            f"embedding_health needs at least 2 feature rows (N, D), got {tuple(features.shape)}"
        )
    z = F.normalize(features.float(), dim=-1)
    n, dim = z.shape
    std = z.std(dim=0).mean() * math.sqrt(dim)
    sim = z @ z.t()
    mean_cos = (sim.sum() - sim.diagonal().sum()) / (n * (n - 1))
    return {"embedding_std": std, "mean_cosine": mean_cos}


class CollapseMonitor(pl.Callback):
    """Raise an alarm when the representation collapses.

    After ``start_step``, a step counts as collapsed when ``health/embedding_std`` is below
    ``min_std`` or ``health/mean_cosine`` is above ``max_cosine`` or, once the teacher
    temperature warm-up is over (``model.loss.teacher_temp_warmup_steps``), when the teacher's
    targets are uniform: ``health/teacher_entropy_norm`` (entropy / log K) at least
    ``max_teacher_entropy``. ``patience`` consecutive collapsed steps trigger the alarm: a
    warning, ``health/collapse`` logged as 1 (0 otherwise) and, with ``stop_on_collapse``, the
    end of training.

    Args:
        min_std: alarm threshold on the normalised embedding std (healthy runs sit near 1).
        max_cosine: alarm threshold on the mean pairwise cosine.
        max_teacher_entropy: alarm threshold on the teacher entropy as a fraction of log K
            (uniform targets); 1 or more disables the check.
        patience: consecutive collapsed steps needed for the alarm.
        start_step: steps ignored at the beginning (random networks look collapsed).
        stop_on_collapse: stop training when the alarm is raised.
    """

    def __init__(
        self,
        min_std: float = 0.05,
        max_cosine: float = 0.99,
        max_teacher_entropy: float = 0.98,
        patience: int = 20,
        start_step: int = 0,
        stop_on_collapse: bool = False,
    ) -> None:
        self.min_std = min_std
        self.max_cosine = max_cosine
        self.max_teacher_entropy = max_teacher_entropy
        self.patience = patience
        self.start_step = start_step
        self.stop_on_collapse = stop_on_collapse
        self.streak = 0
        self.collapsed = False

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        """Check the indicators logged by the step."""
        metrics = trainer.callback_metrics
        # one set of indicators per model: "health/..." or, for distillation, "<student>/health/..."
        prefixes = [
            k[: -len("health/embedding_std")] for k in metrics if k.endswith("health/embedding_std")
        ]
        if not prefixes or trainer.global_step < self.start_step:
            return
        loss_cfg = getattr(pl_module, "loss_cfg", None)
        warmup = int(getattr(loss_cfg, "teacher_temp_warmup_steps", 0) or 0)
        features_bad = uniform = False
        std: Any = None
        cos: Any = None
        entropy: Any = None
        for prefix in prefixes:
            p_std = metrics.get(f"{prefix}health/embedding_std")
            p_cos = metrics.get(f"{prefix}health/mean_cosine")
            if p_std is None or p_cos is None:
                continue
            p_entropy = metrics.get(f"{prefix}health/teacher_entropy_norm")
            p_bad = float(p_std) < self.min_std or float(p_cos) > self.max_cosine
            p_uniform = (
                p_entropy is not None
                and trainer.global_step >= warmup
                and float(p_entropy) >= self.max_teacher_entropy
            )
            # report the first model in trouble (or the first model when all are fine)
            if std is None or ((p_bad or p_uniform) and not (features_bad or uniform)):
                std, cos, entropy = p_std, p_cos, p_entropy
            features_bad, uniform = features_bad or p_bad, uniform or p_uniform
        if std is None or cos is None:
            return
        self.streak = self.streak + 1 if features_bad or uniform else 0
        if self.streak >= self.patience and not self.collapsed:
            self.collapsed = True
            if features_bad:
                log.warning(
                    "collapse alarm at step %d: embedding_std=%.4f (min %.3g), mean_cosine=%.4f "
                    "(max %.3g) for %d steps; lower the learning rate, raise the teacher "
                    "temperature warm-up or the batch size",
                    trainer.global_step,
                    float(std),
                    self.min_std,
                    float(cos),
                    self.max_cosine,
                    self.streak,
                )
            else:
                log.warning(
                    "collapse alarm at step %d: the teacher targets are uniform (entropy "
                    "%.4f log K, max %.3g) for %d steps, so DINO and iBOT learn nothing; lower "
                    "the teacher temperature (docs/pretraining.md, 'Short runs')",
                    trainer.global_step,
                    float(entropy) if entropy is not None else float("nan"),
                    self.max_teacher_entropy,
                    self.streak,
                )
            if self.stop_on_collapse:
                trainer.should_stop = True
        pl_module.log("health/collapse", float(self.collapsed), on_step=True, prog_bar=False)

    def state_dict(self) -> dict[str, Any]:
        """Alarm state, saved in checkpoints."""
        return {"streak": self.streak, "collapsed": self.collapsed}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the alarm state."""
        self.streak = int(state_dict.get("streak", 0))
        self.collapsed = bool(state_dict.get("collapsed", False))


@torch.no_grad()
def knn_accuracy(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    k: int = 10,
    temperature: float = 0.07,
) -> float:
    """Weighted k-nearest-neighbour accuracy on cosine similarity (DINO's kNN protocol).

    Args:
        train_features: ``(N, D)`` reference features.
        train_labels: ``(N,)`` integer labels.
        test_features: ``(M, D)`` query features.
        test_labels: ``(M,)`` integer labels.
        k: neighbours per query (capped at N).
        temperature: similarity temperature of the vote weights ``exp(s / T)``.

    Returns:
        The fraction of queries whose weighted vote gives the true label.
    """
    if train_features.shape[0] == 0 or test_features.shape[0] == 0:
        raise ConfigError("knn_accuracy needs non-empty reference and query sets")
    ref = F.normalize(train_features.float(), dim=-1)
    qry = F.normalize(test_features.float(), dim=-1)
    n_classes = int(max(train_labels.max(), test_labels.max())) + 1
    sims, idx = (qry @ ref.t()).topk(min(k, ref.shape[0]), dim=-1)
    votes = torch.zeros(qry.shape[0], n_classes)
    votes.scatter_add_(1, train_labels.long()[idx], (sims / temperature).exp())
    return float((votes.argmax(dim=-1) == test_labels.long()).float().mean())


class KNNProbe(pl.Callback):
    """Log a kNN accuracy of the teacher's cls features on a small labelled probe set.

    The datamodule provides the set through ``probe_data()`` returning normalised chips
    ``(N, C, H, W)``, integer labels ``(N,)`` and a boolean ``(N,)`` split (True = reference).
    Logged as ``probe/knn_acc`` every ``every_n_steps`` steps and at the end of training.

    Args:
        every_n_steps: probe interval in optimizer steps.
        k: neighbours of the vote.
        batch_size: chips per forward pass.
    """

    def __init__(self, every_n_steps: int = 100, k: int = 10, batch_size: int = 64) -> None:
        self.every_n_steps = every_n_steps
        self.k = k
        self.batch_size = batch_size
        self.last_accuracy: float | None = None

    def _probe(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        datamodule = getattr(trainer, "datamodule", None)
        getter = getattr(datamodule, "probe_data", None)
        data = getter() if getter is not None else None
        if data is None:
            return
        images, labels, is_ref = data
        backbone: Any = getattr(pl_module, "teacher_backbone", None)
        if backbone is None:
            return
        was_training = backbone.training
        backbone.eval()
        feats = []
        with torch.no_grad():
            for start in range(0, images.shape[0], self.batch_size):
                chunk = images[start : start + self.batch_size].to(pl_module.device)
                feats.append(backbone.forward_features(chunk)["x_norm_clstoken"].float().cpu())
        backbone.train(was_training)
        features = torch.cat(feats)
        acc = knn_accuracy(
            features[is_ref], labels[is_ref], features[~is_ref], labels[~is_ref], k=self.k
        )
        self.last_accuracy = acc
        pl_module.log("probe/knn_acc", acc, on_step=True, prog_bar=True, rank_zero_only=True)

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        """Probe every ``every_n_steps`` steps."""
        step = trainer.global_step
        if self.every_n_steps > 0 and step > 0 and step % self.every_n_steps == 0:
            self._probe(trainer, pl_module)


def read_metrics(csv_path: Path) -> dict[str, list[tuple[int, float]]]:
    """The ``(step, value)`` series of every metric in a ``CSVLogger`` ``metrics.csv``."""
    series: dict[str, list[tuple[int, float]]] = {}
    with csv_path.open(newline="") as fh:
        for row in csv.DictReader(fh):
            step_text = row.get("step", "")
            if not step_text:
                continue
            step = int(float(step_text))
            for key, value in row.items():
                if key in {"step", "epoch"} or value in ("", None):
                    continue
                series.setdefault(key, []).append((step, float(value)))
    return series


def plot_training_curves(
    metrics_csv: str | Path,
    out_png: str | Path,
    keys: Mapping[str, str] | None = None,
    references: Mapping[str, tuple[float, str]] | None = None,
) -> Path:
    """Render the loss and health curves of a CSV log (``CSVLogger``'s ``metrics.csv``) to PNG.

    Args:
        metrics_csv: the ``metrics.csv`` written by Lightning's ``CSVLogger``.
        out_png: output image path (written atomically).
        keys: optional ``{metric: title}`` selection; default: every ``loss/``, ``health/`` and
            ``probe/`` metric in the file.
        references: optional ``{metric: (value, label)}`` horizontal reference lines, e.g.
            ``{"loss/dino": (math.log(K), "ln K")}``: the DINO loss of uniform targets.

    Returns:
        The path of the written PNG.

    Raises:
        FileNotFoundError: if the CSV file does not exist.
        ConfigError: if the file holds none of the requested metrics.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    csv_path = Path(metrics_csv)
    if not csv_path.is_file():
        raise FileNotFoundError(
            f"{csv_path}: no such metrics file; pass the CSVLogger's metrics.csv"
        )
    series = read_metrics(csv_path)
    if keys is None:
        keys = {
            k: k for k in sorted(series) if k.split("/")[0] in {"loss", "health", "probe", "sched"}
        }
    selected = {k: t for k, t in keys.items() if k in series}
    if not selected:
        raise ConfigError(
            f"{csv_path}: none of the metrics {sorted(keys)} were logged; available: {sorted(series)}"
        )
    n = len(selected)
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.0 * rows), squeeze=False)
    for ax, (key, title) in zip(axes.flat, selected.items()):
        steps, values = zip(*series[key])
        ax.plot(steps, values, lw=1.2)
        if references and key in references:
            value, label = references[key]
            ax.axhline(value, color="tab:red", ls="--", lw=1.0, label=label)
            ax.legend(fontsize=7, loc="best")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.tight_layout()
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".png", dir=out.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=110)
        os.replace(tmp, out)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out
