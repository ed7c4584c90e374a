"""The LightningModule skeleton shared by the dense heads, and backbone resolution.

All dense tasks follow one pattern (torchgeo's ``BaseTask``): typed constructor arguments,
``save_hyperparameters``, then ``configure_models``, ``configure_losses`` and
``configure_metrics``. The backbone is frozen by default (``unfreeze_last_blocks`` leaves the
last blocks trainable at ``backbone_lr``). At the end of ``fit`` the model is written as one model
bundle (``bundle_path``) that ``dinogeo predict`` and ``dinogeo validate`` load.

``imagery.backbone`` is either a dinogeo backbone file (``.safetensors`` / checkpoint with a weight card)
or a registered architecture name for a randomly initialised backbone (baselines and tests); in
the latter case the weight card is made from the ``sensor`` spec (bands, scale, statistics).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningModule
from torch import Tensor

from dinogeo.data.imagery_spec import DEFAULT_BACKBONE, ImagerySpec
from dinogeo.data.sample_types import LabeledSample
from dinogeo.data.sensors import load_sensor
from dinogeo.errors import ConfigError
from dinogeo.models.backbone import Backbone, create_backbone
from dinogeo.models.backbone_file import load_backbone
from dinogeo.models.bundle import ModelBundle, save_bundle
from dinogeo.models.card import WeightCard
from dinogeo.models.heads import DenseModel, HeadConfig, build_model
from dinogeo.models.registry import list_archs
from dinogeo.models.task_card import TaskCard, load_task_card
from dinogeo.trainers.metrics import TaskMetrics
from dinogeo.trainers.selection import BestOnSelection

__all__ = ["CachedFeatures", "DenseTask", "resolve_backbone"]

#: backbone features a batch may carry (the feature cache): one list of maps per image, or one
#: per date for change pairs
type CachedFeatures = list[Tensor] | tuple[list[Tensor], list[Tensor]]
#: (mean, std) of the standardised features a joint linear probe was fitted on
type FeatureScaling = tuple[Tensor, Tensor]

#: the default imagery of a task: the tiny test architecture on the weight card's sensor
DEFAULT_IMAGERY = ImagerySpec(backbone=DEFAULT_BACKBONE)


def resolve_backbone(imagery: ImagerySpec) -> tuple[Backbone, WeightCard]:
    """Load a backbone file, or build a randomly initialised one for a sensor.

    Args:
        imagery: ``backbone`` is the path of a dinogeo backbone file, or an architecture name
            (``dinogeo.models.list_archs()``) for random initialisation, which needs ``sensor``
            and takes ``bands`` (all of the sensor's when None) and the scale/offset overrides
            stored in the card.

    Returns:
        ``(backbone, weight card)``.

    Raises:
        ConfigError: unknown architecture/file, or no sensor for a random backbone.
        CheckpointError: an unreadable backbone file.
    """
    backbone, sensor = imagery.backbone, imagery.sensor
    if backbone is None:
        raise ConfigError(
            "no backbone given: set data.init_args.backbone to a backbone file from "
            f"'dinogeo pretrain' or one of {list_archs()}"
        )
    path = Path(backbone)
    if path.suffix or path.exists():
        return load_backbone(path)
    if backbone not in list_archs():
        raise ConfigError(
            f"backbone {backbone!r} is neither a file nor an architecture: pass the path of a "
            f"backbone from 'dinogeo pretrain' or one of {list_archs()}"
        )
    if sensor is None:
        raise ConfigError(
            f"a randomly initialised backbone ({backbone!r}) needs the imagery's sensor for its "
            "band names and normalisation: set data.sensor (e.g. sentinel2_l2a, rgb_uint8)"
        )
    spec = load_sensor(sensor).with_scaling(imagery.scale, imagery.offset)
    if imagery.bands:
        spec = spec.select(list(imagery.bands))
    model = create_backbone(backbone, in_chans=len(spec.bands))
    card = WeightCard.for_sensor(
        model, spec, training_config={"init": "random", "arch": backbone}, source="random-init"
    )
    return model, card


class DenseTask(LightningModule):
    """Shared skeleton of the dense heads (segmentation, canopy height, change).

    Args:
        task: task card name or YAML path (linked from the data module).
        imagery: the backbone (file, or architecture name for random init) and how the imagery
            is read for it (linked from the data module's ``imagery``).
        decoder: ``"dpt"`` or ``"linear"``.
        layer_indices: backbone blocks feeding the decoder (default: 4 evenly spaced).
        features: decoder width.
        image_skip: channels of the full-resolution image branch (default 16; 0: off, the pure
            backbone-feature head).
        pixel_linear: add a per-pixel linear map of the input bands to the outputs (the
            per-pixel linear classifier, inside the head).
        feature_linear: add a linear map of the decoder layers' features to the outputs (the
            linear probe of the backbone, inside the head; segmentation and height). With the
            tasks' ``pixel_init`` both linear terms start at the joint linear probe of bands and
            features, and the rest of the head learns the residual (LP-FT).
        unfreeze_last_blocks: number of final backbone blocks to train (0: frozen backbone).
        lr: learning rate of the head.
        backbone_lr: learning rate of unfrozen backbone blocks.
        weight_decay: AdamW weight decay.
        warmup_steps: linear warm-up steps before the cosine decay.
        bundle_path: where to write the model bundle at the end of fit (None: no bundle).
        bundle_backbone_ref: store a reference to the backbone file instead of its weights
            (only when the backbone stayed frozen and is a file).
    """

    head_type = "segmentation"

    def __init__(
        self,
        task: str = "land_cover",
        imagery: ImagerySpec = DEFAULT_IMAGERY,
        decoder: str = "dpt",
        layer_indices: list[int] | None = None,
        features: int = 128,
        image_skip: int = 16,
        pixel_linear: bool = True,
        feature_linear: bool = False,
        unfreeze_last_blocks: int = 0,
        lr: float = 1e-3,
        backbone_lr: float = 1e-5,
        weight_decay: float = 1e-4,
        warmup_steps: int = 0,
        bundle_path: str | None = None,
        bundle_backbone_ref: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.imagery = imagery
        self.task_card: TaskCard = load_task_card(task)
        self.check_task_kind()
        self.configure_models()
        self.configure_losses()
        self.configure_metrics()

    # ------------------------------------------------------------------ configuration
    def check_task_kind(self) -> None:
        """Raise ConfigError when the task card's kind does not fit this trainer."""
        wanted = {"segmentation": "segmentation", "height": "regression", "change": "change"}
        if self.task_card.kind != wanted[self.head_type]:
            raise ConfigError(
                f"{type(self).__name__} trains {wanted[self.head_type]} heads but task card "
                f"{self.task_card.name!r} is of kind {self.task_card.kind!r}: use the matching "
                "trainer (LandCoverTask, CanopyHeightTask, ChangeTask) or task card"
            )

    def head_config(self) -> HeadConfig:
        """The head configuration built from the hyperparameters."""
        hp = self.hparams
        return HeadConfig(
            type=self.head_type,
            num_outputs=self.task_card.num_outputs,
            decoder=hp["decoder"],
            layer_indices=list(hp["layer_indices"] or []),
            features=hp["features"],
            image_skip=hp["image_skip"],
            pixel_linear=bool(hp.get("pixel_linear", False)),
            feature_linear=bool(hp.get("feature_linear", False)),
        )

    def configure_models(self) -> None:
        """Build the backbone (frozen except the last blocks) and the dense model."""
        hp = self.hparams
        backbone, self.weight_card = resolve_backbone(self.imagery)
        backbone.freeze(hp["unfreeze_last_blocks"])
        self.model: DenseModel = build_model(backbone, self.head_config())

    def configure_losses(self) -> None:
        """Set up the loss modules (subclasses)."""

    def configure_metrics(self) -> None:
        """Set up training and validation metrics."""
        self.val_metrics = TaskMetrics(self.task_card)

    def probe_inputs(self, images: Tensor, index: Tensor) -> tuple[Tensor, FeatureScaling | None]:
        """The inputs of the head's linear terms at some pixels: bands, then features.

        Args:
            images: normalised training chips (N, C, H, W).
            index: flat indices into their N * H * W pixels.

        Returns:
            ``(x, scaling)``: x is (len(index), C) pixels, followed by the standardised features
            of :meth:`DenseModel.pixel_features` when the head has ``feature_linear``; scaling
            (their mean and std) is what :meth:`start_pixel_linear` needs to undo it.
        """
        x = images.permute(0, 2, 3, 1).reshape(-1, images.shape[1])[index]
        if self.model.feature_linear is None:
            return x, None
        feats = self.model.pixel_features(images, index)
        mean, std = feats.mean(0), feats.std(0).clamp_min(1e-6)
        return torch.cat([x, (feats - mean) / std], dim=1), (mean, std)

    def start_pixel_linear(
        self, fitted: torch.nn.Linear, scaling: FeatureScaling | None = None
    ) -> None:
        """Start the head's linear terms at ``fitted`` and the rest of its output at 0.

        The untrained head then predicts exactly what ``fitted`` does and training learns the
        residual (see the tasks' ``pixel_init``).

        Args:
            fitted: a linear layer on the per-pixel bands, or on :meth:`probe_inputs` (bands,
                then standardised features) when the head has ``feature_linear``.
            scaling: the features' (mean, std) from :meth:`probe_inputs`.

        Raises:
            ConfigError: the head has no per-pixel linear term.
        """
        layer = self.model.pixel_linear
        if layer is None:
            raise ConfigError("the head has no per-pixel linear term: set pixel_linear: true")
        out = self.model.output_layer()
        bands = layer.weight.shape[1]
        weight, bias = fitted.weight.detach(), fitted.bias.detach()
        with torch.no_grad():
            layer.weight.copy_(weight[:, :bands, None, None])
            probe = self.model.feature_linear
            if probe is not None and scaling is not None:
                mean, std = scaling
                on_features = weight[:, bands:] / std
                probe.weight.copy_(on_features[:, :, None, None])
                if probe.bias is not None:
                    probe.bias.zero_()
                bias = bias - on_features @ mean
            if layer.bias is not None:
                layer.bias.copy_(bias)
            out.weight.zero_()
            if out.bias is not None:
                out.bias.zero_()

    # ------------------------------------------------------------------ steps
    def forward(self, *images: Tensor, features: CachedFeatures | None = None) -> Tensor:
        """Raw model output (logits, or heights in metres).

        ``features``: the frozen backbone's features of the images when a batch carries them
        (see :meth:`cached_features`); None runs the backbone.
        """
        output: Tensor = self.model(*images, features=features)
        return output

    def inputs(self, batch: LabeledSample) -> tuple[Tensor, ...]:
        """The model inputs of a batch."""
        return (batch["image"],)

    def cached_features(self, batch: LabeledSample) -> CachedFeatures | None:
        """Precomputed backbone features carried by a batch (``features``), or None.

        A batch from :class:`~dinogeo.trainers.feature_cache.CachedFeatureDataModule` carries
        them, so a frozen backbone is not run again at every step.
        """
        return batch.get("features")

    def loss(self, output: Tensor, batch: LabeledSample) -> Tensor:
        """The training loss of one batch (subclasses)."""
        raise NotImplementedError

    def training_step(self, batch: LabeledSample, batch_idx: int) -> Tensor:
        """One optimisation step."""
        output = self(*self.inputs(batch), features=self.cached_features(batch))
        loss = self.loss(output, batch)
        self.log("train_loss", loss, prog_bar=True, batch_size=output.shape[0])
        return loss

    def validation_step(self, batch: LabeledSample, batch_idx: int) -> None:
        """Accumulate validation loss and metrics."""
        output = self(*self.inputs(batch), features=self.cached_features(batch))
        loss = self.loss(output, batch)
        if torch.isfinite(loss):
            self.log("val_loss", loss, prog_bar=True, batch_size=output.shape[0])
        self.val_metrics.update(output.detach(), batch["mask"])

    def on_validation_epoch_end(self) -> None:
        """Log the validation metrics and reset them."""
        for name, value in self.val_metrics.compute().items():
            if math.isfinite(value):
                self.log(f"val_{name}", value)
        self.val_metrics.reset()

    def configure_optimizers(self) -> Any:
        """AdamW on the head (``lr``) and any unfrozen backbone blocks (``backbone_lr``)."""
        hp = self.hparams
        head = [p for n, p in self.model.named_parameters() if not n.startswith("backbone.")]
        body = [p for p in self.model.backbone.parameters() if p.requires_grad]
        groups = [{"params": [p for p in head if p.requires_grad], "lr": hp["lr"]}]
        if body:
            groups.append({"params": body, "lr": hp["backbone_lr"]})
        optimizer = torch.optim.AdamW(groups, weight_decay=hp["weight_decay"])
        total = self._trainer.estimated_stepping_batches if self._trainer is not None else 0
        if not total or not math.isfinite(total) or total < 1:
            return optimizer
        warm = int(hp["warmup_steps"])

        def factor(step: int) -> float:
            if warm and step < warm:
                return (step + 1) / warm
            progress = min(1.0, (step - warm) / max(1, int(total) - warm))
            return 0.5 * (1.0 + math.cos(math.pi * progress))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    # ------------------------------------------------------------------ bundle
    def train(self, mode: bool = True) -> DenseTask:
        """Keep frozen backbone parts in eval mode (no dropout/drop-path) while training."""
        super().train(mode)
        if mode and self.hparams["unfreeze_last_blocks"] == 0:
            self.model.backbone.eval()
        return self

    def training_config(self) -> dict[str, Any]:
        """JSON-ready description of the training run, stored in the bundle."""
        hparams = {**self.hparams, "imagery": self.imagery.to_dict()}
        config: dict[str, Any] = {"trainer": type(self).__name__, "hparams": hparams}
        if self._trainer is not None:
            config["global_step"] = int(self.trainer.global_step)
            config["epochs"] = int(self.trainer.current_epoch)
            datamodule = getattr(self.trainer, "datamodule", None)
            if datamodule is not None and hasattr(datamodule, "describe"):
                config["data"] = datamodule.describe()
            for callback in self.trainer.callbacks:  # type: ignore[attr-defined]
                if isinstance(callback, BestOnSelection):
                    config["selection"] = callback.summary()
        return config

    def to_bundle(self) -> ModelBundle:
        """The current model as a :class:`ModelBundle`."""
        return ModelBundle(
            card=self.weight_card,
            task=self.task_card,
            model=self.model,
            head=self.model.config,
            training_config=self.training_config(),
        )

    def on_fit_end(self) -> None:
        """Write the model bundle when ``bundle_path`` is set (global rank 0 only)."""
        path = self.hparams["bundle_path"]
        if not path or self.global_rank != 0:
            return
        ref = None
        backbone = Path(self.imagery.backbone or "")  # set: configure_models loaded it
        if self.hparams["bundle_backbone_ref"]:
            if self.hparams["unfreeze_last_blocks"] or not backbone.is_file():
                raise ConfigError(
                    "bundle_backbone_ref needs a frozen backbone loaded from a file; set "
                    "unfreeze_last_blocks: 0 or bundle_backbone_ref: false"
                )
            ref = backbone
        save_bundle(path, self.to_bundle(), backbone_path=ref)
        print(f"dinogeo fit: wrote model bundle {path}")
