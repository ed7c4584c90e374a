"""``SSLTask``: DINOv3 pretraining (DINO + iBOT + KoLeo + Gram anchoring) as a LightningModule.

The student (backbone + separate DINO and iBOT heads) is trained by AdamW with the recipe's
parameter groups (layer-wise decay, patch-embedding multiplier, no decay on biases / norms /
LayerScale, frozen prototypes at the start) and per-module gradient clipping; the teacher is
its EMA, updated right after every optimizer step and, like the Gram teacher, always in eval mode
(no drop path, no RoPE rescaling). All schedules (learning rate, weight decay, EMA momentum,
teacher temperature, Gram weight) are functions of ``global_step``, so a resumed run continues
exactly. bf16 autocast is used on CUDA devices that support it, fp32 elsewhere.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor, nn

from dinogeo.errors import ConfigError
from dinogeo.models.backbone import Backbone
from dinogeo.models.card import WeightCard
from dinogeo.models.materialise import (
    shared_copy,
    unshare,
)
from dinogeo.ssl.batch_types import MultiCropBatch
from dinogeo.ssl.dino_head import build_head
from dinogeo.ssl.dino_loss import DINOLoss
from dinogeo.ssl.ema import ema_update
from dinogeo.ssl.fsdp import SSLFSDPStrategy, full_state_dict
from dinogeo.ssl.gram_teacher import GramTeacher
from dinogeo.ssl.ibot_loss import iBOTPatchLoss
from dinogeo.ssl.koleo_loss import koleo_group_ranks
from dinogeo.ssl.module_export import TEACHER_PREFIX, export_teacher_backbone, training_config
from dinogeo.ssl.module_step import ssl_losses
from dinogeo.ssl.param_groups import build_param_groups
from dinogeo.ssl.schedules import Schedule
from dinogeo.ssl.start_weights import DeferredStart, fill_deferred, start_backbones
from dinogeo.ssl.task_base import StepScheduledTask
from dinogeo.ssl.task_config import (
    DINOHeadConfig,
    GramConfig,
    InitConfig,
    LossConfig,
    OptimConfig,
    coerce,
    config_dict,
)
from dinogeo.ssl.task_schedules import build_task_schedules

__all__ = ["SSLTask"]

log = logging.getLogger(__name__)


class SSLTask(StepScheduledTask):
    """DINOv3 self-supervised pretraining of a :class:`~dinogeo.models.Backbone`.

    Args:
        arch: backbone architecture (``dinogeo.models.list_archs()``), e.g.
            ``"vit_small_patch16_dinov3_qkvb"`` or the tiny ``"vit_test_patch16_dinov3"``.
        in_chans: number of input bands (linked from the datamodule by ``dinogeo pretrain``).
        band_names: the bands, in order (linked from the datamodule); used to expand official
            RGB weights and written to the weight card.
        img_size: nominal image size of the backbone.
        drop_path_rate: stochastic depth, the same at every block.
        rope_rescale_coords: RoPE coordinate rescaling factor in training (2 in DINOv3).
        backbone_kwargs: further ``create_backbone`` / timm options, e.g. ``{"init_values": 0.1}``
            (LayerScale initialisation; DINOv3 uses 1e-5, toy runs of a few steps learn faster
            with a larger value).
        dino_head: the DINO head.
        ibot_head: the iBOT head (separate weights, as in DINOv3).
        loss: loss weights and temperatures.
        optim: optimizer and schedules.
        gram: Gram anchoring.
        init: initial weights (official checkpoint, head warm-up).
        autocast: ``"auto"`` (bf16 on CUDA devices that support it, else fp32), ``"bf16"`` or
            ``"fp32"``.
        seed: seed of the per-step random draws (drop path, RoPE jitter).
        export_path: where to write the final EMA teacher backbone (``.safetensors`` with its
            weight card) when training ends; ``None`` or ``""`` skips the export (``dinogeo
            pretrain`` turns ``None`` into ``<trainer.default_root_dir>/backbone.safetensors``).
    """

    def __init__(
        self,
        arch: str = "vit_small_patch16_dinov3_qkvb",
        in_chans: int = 3,
        band_names: list[str] | None = None,
        img_size: int = 224,
        drop_path_rate: float = 0.0,
        rope_rescale_coords: float | None = 2.0,
        backbone_kwargs: dict[str, Any] | None = None,
        dino_head: DINOHeadConfig | None = None,
        ibot_head: DINOHeadConfig | None = None,
        loss: LossConfig | None = None,
        optim: OptimConfig | None = None,
        gram: GramConfig | None = None,
        init: InitConfig | None = None,
        autocast: str = "auto",
        seed: int = 0,
        export_path: str | None = None,
    ) -> None:
        super().__init__(coerce(OptimConfig, optim), autocast, seed)
        self.dino_head_cfg = coerce(DINOHeadConfig, dino_head)
        self.ibot_head_cfg = coerce(DINOHeadConfig, ibot_head)
        self.loss_cfg = coerce(LossConfig, loss)
        self.gram_cfg = coerce(GramConfig, gram)
        self.init_cfg = coerce(InitConfig, init)
        defaults = LossConfig()
        for name in ("mask_ratio", "mask_probability"):
            if tuple(np.atleast_1d(getattr(self.loss_cfg, name))) != tuple(
                np.atleast_1d(getattr(defaults, name))
            ):
                raise ConfigError(
                    f"model.loss.{name} is read by distillation only: pretraining draws its iBOT "
                    f"masks in the data module, set data.{name} instead"
                )
        if band_names is not None and len(band_names) != in_chans:
            raise ConfigError(
                f"band_names lists {len(band_names)} bands {band_names} but in_chans={in_chans}: "
                "give one name per input band"
            )
        self.save_hyperparameters(
            {
                "arch": arch,
                "in_chans": in_chans,
                "band_names": list(band_names) if band_names else None,
                "img_size": img_size,
                "drop_path_rate": drop_path_rate,
                "rope_rescale_coords": rope_rescale_coords,
                "backbone_kwargs": dict(backbone_kwargs or {}),
                "dino_head": config_dict(self.dino_head_cfg),
                "ibot_head": config_dict(self.ibot_head_cfg),
                "loss": config_dict(self.loss_cfg),
                "optim": config_dict(self.optim_cfg),
                "gram": config_dict(self.gram_cfg),
                "init": config_dict(self.init_cfg),
                "autocast": autocast,
                "seed": seed,
                "export_path": export_path,
            }
        )
        self.arch = arch
        self.band_names = list(band_names) if band_names else None
        self.export_path = export_path

        kwargs: dict[str, Any] = {
            "img_size": img_size,
            "drop_path_rate": drop_path_rate,
            "rope_rescale_coords": rope_rescale_coords,
            **dict(backbone_kwargs or {}),
        }
        backbone, gram_teacher, deferred = start_backbones(
            arch, in_chans, self.init_cfg, self.gram_cfg, self.band_names, **kwargs
        )
        #: what configure_model still loads into meta backbones (init.load_on_rank0)
        self._deferred: DeferredStart | None = deferred if deferred.start or deferred.gram else None
        dim = backbone.embed_dim
        self.student = nn.ModuleDict(
            {
                "backbone": backbone,
                "dino_head": build_head(dim, self.dino_head_cfg),
                "ibot_head": build_head(dim, self.ibot_head_cfg),
            }
        )
        # the teachers start equal to the student: they share its storage (no host copy) until
        # they diverge (see _unshare); moving to an accelerator or wrapping with FSDP splits them
        self.teacher = shared_copy(self.student)
        self.teacher.requires_grad_(False)
        self.teacher.eval()
        self._shared = True
        self.gram_teacher: GramTeacher | None = gram_teacher
        self.dino_loss = DINOLoss(self.dino_head_cfg.out_dim, self.loss_cfg.student_temp)
        self.ibot_loss = iBOTPatchLoss(self.ibot_head_cfg.out_dim, self.loss_cfg.student_temp)

    # ------------------------------------------------------------------ accessors
    @property
    def student_backbone(self) -> Backbone:
        """The student backbone."""
        return self.student["backbone"]  # type: ignore[return-value]

    @property
    def teacher_backbone(self) -> Backbone:
        """The EMA teacher backbone (the one exported at the end)."""
        return self.teacher["backbone"]  # type: ignore[return-value]

    def train(self, mode: bool = True) -> SSLTask:
        """Set the student's mode; the EMA and Gram teachers always stay in eval mode.

        As in the official ``SSLMetaArch``: the teachers never apply drop path nor RoPE
        coordinate rescaling, so their targets are deterministic functions of the input.
        """
        super().train(mode)
        self.teacher.eval()
        if self.gram_teacher is not None:
            self.gram_teacher.eval()
        return self

    def _unshare(self) -> None:
        """Give the EMA and Gram teachers their own storage before anything changes.

        They are built sharing the student's tensors (no host copy at construction). Moving the
        module to an accelerator or wrapping it with FSDP already separates them (nothing is
        copied here then); on the CPU this copies them once, before the first step, the first
        checkpoint load or the first Gram refresh.
        """
        if not self._shared:
            return
        self._shared = False
        copied = unshare(self.teacher, self.student)
        if self.gram_teacher is not None:
            copied += unshare(self.gram_teacher, self.student, self.teacher)
        if copied:
            log.info("teachers given their own copy of the weights (%.1f MB)", copied / 2**20)

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        """``nn.Module.load_state_dict``, once the teachers have their own storage."""
        self._unshare()
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def on_fit_start(self) -> None:
        """Separate the teachers' weights from the student's (see :meth:`_unshare`)."""
        self._unshare()

    def configure_model(self) -> None:
        """Under :class:`~dinogeo.ssl.fsdp.SSLFSDPStrategy`, shard the backbones and heads (FSDP2).

        Lightning calls this hook on every rank before the optimizer is built; with any other
        strategy it does nothing.
        """
        strategy = self._trainer.strategy if self._trainer is not None else None
        if self._deferred is not None:
            self._load_deferred(self._deferred, strategy)
        elif isinstance(strategy, SSLFSDPStrategy):
            strategy.shard(self)
            # fully_shard copies each parameter's shard into its own storage: the teachers no
            # longer share the student's weights (their constant buffers, RoPE periods, may)
            self._shared = False

    def _load_deferred(self, plan: DeferredStart, strategy: Any) -> None:
        """Fill the meta backbones (``init.load_on_rank0``): read on rank 0, shard, broadcast.

        See :func:`~dinogeo.ssl.start_weights.fill_deferred`.
        """
        fsdp = isinstance(strategy, SSLFSDPStrategy)
        fill_deferred(
            self.student_backbone,
            self.teacher_backbone,
            self.gram_teacher,
            plan,
            shard=(lambda: strategy.shard(self)) if fsdp else None,
            device=strategy.root_device if strategy is not None else torch.device("cpu"),
        )
        if plan.start or fsdp:
            self._shared = False  # the teachers were copied, not shared (or FSDP separated them)
        self._deferred = None

    def forward(self, x: Tensor) -> Tensor:
        """Teacher cls features of a normalised batch ``(B, C, H, W)``."""
        return self.teacher_backbone.forward_features(x)["x_norm_clstoken"]

    # ------------------------------------------------------------------ schedules
    def build_schedules(self, total_steps: int, global_batch: int) -> dict[str, Schedule]:
        """Per-step schedules of this run (see :func:`~dinogeo.ssl.task_schedules.build_task_schedules`).

        Args:
            total_steps: length of the schedules.
            global_batch: global batch size for the learning-rate scaling rule.

        Returns:
            ``{"lr", "wd", "momentum", "teacher_temp", "gram_weight", "local_weight"}``.
        """
        return build_task_schedules(
            self.optim_cfg, self.loss_cfg, self.gram_cfg, total_steps, global_batch
        )

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self) -> torch.optim.Optimizer:
        """AdamW over the recipe's parameter groups (values set every step)."""
        groups: list[dict[str, Any]] = []
        n_blocks = self.student_backbone.depth
        for name in ("backbone", "dino_head", "ibot_head"):
            module_groups = build_param_groups(
                ((f"{name}.{n}", p) for n, p in self.student[name].named_parameters()),
                n_blocks=n_blocks,
                layer_decay=self.optim_cfg.layerwise_decay,
                patch_embed_lr_mult=self.optim_cfg.patch_embed_lr_mult,
            )
            for group in module_groups:
                group["module"] = name
                group.pop("names", None)
            groups.extend(module_groups)
        # fused AdamW: one kernel for all parameters (8x faster than foreach on CPU for 50M params)
        fused = self.device.type in {"cuda", "cpu"}
        b1, b2 = (float(b) for b in self.optim_cfg.betas)
        return torch.optim.AdamW(groups, lr=self.optim_cfg.lr, betas=(b1, b2), fused=fused)

    def apply_optim_values(self, step: int) -> None:
        """Step ``step``'s lr and weight decay per group (0 for frozen prototypes / head warm-up)."""
        optimizer = cast(torch.optim.Optimizer, self.optimizers(use_pl_optimizer=False))
        lr = self._schedule("lr", step)
        wd = self._schedule("wd", step)
        warmup = step < self.init_cfg.head_warmup_steps
        frozen_last = step < self.optim_cfg.freeze_last_layer_steps
        for group in optimizer.param_groups:
            value = lr * group.get("lr_multiplier", 1.0)
            if (group.get("is_last_layer") and frozen_last) or (
                warmup and group.get("module") == "backbone"
            ):
                value = 0.0
            group["lr"] = value
            group["weight_decay"] = wd * group.get("wd_multiplier", 1.0)

    def configure_gradient_clipping(
        self,
        optimizer: torch.optim.Optimizer,
        gradient_clip_val: int | float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """Clip the backbone, DINO head and iBOT head gradients separately (the recipe)."""
        if self.global_step < self.init_cfg.head_warmup_steps:
            for p in self.student_backbone.parameters():
                p.grad = None if p.grad is None else torch.zeros_like(p.grad)
        self.clip_modules(dict(self.student.items()))

    # ------------------------------------------------------------------ training
    def on_train_start(self) -> None:
        """Reset cached schedules; take the Gram teacher from the EMA teacher if still unset."""
        self._unshare()
        self._schedules = {}
        stage = self.optim_cfg.stage_start_step
        if stage and self.global_step != stage:
            log.warning(
                "optim.stage_start_step=%d but the run starts at step %d: this stage's lr "
                "warm-up starts at step %d; set stage_start_step to the step it resumes at",
                stage,
                self.global_step,
                stage,
            )
        if self.loss_cfg.koleo_group_size > 0 and self._trainer is not None:
            datamodule = getattr(self._trainer, "datamodule", None)
            per_rank = int(getattr(datamodule, "batch_size", 0) or 0)
            if per_rank:  # fail at start, not at the first loss
                koleo_group_ranks(
                    self.loss_cfg.koleo_group_size, per_rank, self._trainer.world_size
                )
        gram = self.gram_teacher
        if gram is not None and not gram.ready and self.gram_cfg.from_ema_at_start:
            gram.copy_from(self.teacher_backbone)
            log.info("Gram teacher taken from the EMA teacher at step %d", self.global_step)

    def training_step(self, batch: MultiCropBatch, batch_idx: int) -> Tensor:
        """Compute and log the DINOv3 losses of one multi-crop batch."""
        self._unshare()
        step = self.global_step
        temp = self._schedule("teacher_temp", step)
        gram_weight = self._schedule("gram_weight", step) if self.gram_cfg.enabled else 0.0
        local_weight = self._schedule("local_weight", step)
        with self._autocast():
            out = ssl_losses(
                self.student,
                self.teacher,
                batch,
                dino_loss=self.dino_loss,
                ibot_loss=self.ibot_loss,
                loss_cfg=self.loss_cfg,
                teacher_temp=temp,
                gram_teacher=self.gram_teacher,
                gram_cfg=self.gram_cfg,
                gram_weight=gram_weight,
                local_weight=local_weight,
            )
        batch_size = batch["global_crops"].shape[0] // 2
        self.log_dict(out.logs, on_step=True, on_epoch=False, batch_size=batch_size)
        self.log("loss", out.logs["loss/total"], prog_bar=True, logger=False, batch_size=batch_size)
        scheds = {
            "sched/lr": self._schedule("lr", step),
            "sched/wd": self._schedule("wd", step),
            "sched/momentum": self._schedule("momentum", step),
            "sched/teacher_temp": temp,
            "sched/gram_weight": gram_weight,
            "sched/local_weight": local_weight,
            # the step's resolution (varies with data.crop_mix)
            "data/global_size": float(batch["global_crops"].shape[-1]),
        }
        if batch["local_crops"].numel():
            scheds["data/local_size"] = float(batch["local_crops"].shape[-1])
        self.log_dict(scheds, on_step=True, on_epoch=False, batch_size=batch_size)
        return out.loss

    def _param_pairs(self) -> tuple[list[Tensor], list[Tensor]]:
        teacher: list[Tensor] = [p for _, p in sorted(self.teacher.named_parameters())]
        student: list[Tensor] = [p for _, p in sorted(self.student.named_parameters())]
        return teacher, student

    def optimizer_step(
        self,
        epoch: int,
        batch_idx: int,
        optimizer: Any,
        optimizer_closure: Callable[[], Any] | None = None,
    ) -> None:
        """Step the optimizer, then EMA-update the teacher and maybe refresh the Gram teacher.

        Done here rather than in ``on_train_batch_end`` so that checkpoints written by callbacks
        at the end of a batch already contain the updated teacher (exact resume).
        """
        self._unshare()
        step = self.global_step  # index of the step being taken
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        teacher, student = self._param_pairs()
        ema_update(teacher, student, self._schedule("momentum", step))
        if self.gram_teacher is not None and self.gram_teacher.maybe_update(
            step, self.teacher_backbone
        ):
            log.info("Gram teacher refreshed from the EMA teacher after step %d", step + 1)

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Add the weight card so that ``load_backbone`` reads the teacher from the ``.ckpt``."""
        card = self.weight_card()
        if card is not None:
            checkpoint["dinogeo_card"] = card.to_json()
            checkpoint["dinogeo_backbone_prefix"] = TEACHER_PREFIX

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Accept stage-1 checkpoints without Gram weights (stage 2 adds a Gram teacher)."""
        state = checkpoint.get("state_dict", {})
        for key, value in self.state_dict().items():
            if key.startswith("gram_teacher.") and key not in state:
                state[key] = value
        for key in [k for k in state if k.startswith("gram_teacher.")]:
            if self.gram_teacher is None:
                del state[key]

    def on_train_end(self) -> None:
        """Export the EMA teacher backbone with its weight card."""
        if self.export_path:
            self.export_backbone(Path(self.export_path))

    # ------------------------------------------------------------------ export
    def weight_card(self) -> WeightCard | None:
        """The weight card of the teacher backbone, or ``None`` without sensor information.

        Band names, sensor, normalisation and scale/offset come from the datamodule's ``sensor``;
        the config hash covers the model, data and trainer settings.
        """
        trainer = self._trainer
        datamodule = getattr(trainer, "datamodule", None) if trainer is not None else None
        sensor = getattr(datamodule, "sensor", None)
        if sensor is None:
            return None
        data = getattr(datamodule, "hparams", None)
        facts = None
        if trainer is not None:
            facts = {
                "max_steps": trainer.max_steps,
                "world_size": trainer.world_size,
                "accumulate_grad_batches": trainer.accumulate_grad_batches,
            }
        config = training_config(self.hparams, dict(data) if data is not None else None, facts)
        source = self.init_cfg.official_checkpoint or self.init_cfg.backbone or "scratch"
        return WeightCard.for_sensor(
            self.teacher_backbone,
            sensor,
            training_config=config,
            source=f"dinogeo pretrain (from {source})",
        )

    def export_backbone(self, path: Path) -> Path | None:
        """Write the EMA teacher backbone and its weight card to ``path`` (``.safetensors``).

        Gathers the full state dict (under FSDP every rank must call this) and writes on global
        rank 0 only.

        Returns:
            The path on rank 0; ``None`` on other ranks or without sensor information.
        """
        state = full_state_dict(self)
        if not self.trainer.is_global_zero:
            return None
        card = self.weight_card()
        if card is None:
            log.warning("no datamodule sensor: the teacher backbone was not exported to %s", path)
            return None
        return export_teacher_backbone(state, self.hparams, card, path)
