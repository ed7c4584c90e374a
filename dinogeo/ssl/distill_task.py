"""``DistillTask``: the DINOv3 recipe's last stage, a frozen big teacher distilled into small students.

The teacher (a dinogeo backbone file with its weight card, plus its DINO/iBOT heads when the file
is a ``dinogeo pretrain`` checkpoint) is frozen. Every step it runs once on the batch; its
Sinkhorn-Knopp targets are shared by all students (:mod:`dinogeo.ssl.distill_teacher`). Each
student (another width, depth or patch size, the teacher's bands) trains on DINO + iBOT with its
input unmasked + KoLeo, no Gram (:mod:`dinogeo.ssl.distill_step`); its EMA is what gets exported,
with a weight card recording the teacher (path, sha256, architecture).

On one process every student trains on the one rank. On several processes each student owns a
subgroup of ranks (``StudentConfig.ranks``, in order), as the official multi-student
distillation: launch with :class:`~dinogeo.ssl.distill_strategy.DistillDDPStrategy`.

When the teacher file has no heads (a ``.safetensors`` backbone: the public weights never have
them), fresh DINO/iBOT heads first train on the frozen teacher for ``teacher.head_warmup_steps``
steps (DINO + iBOT + KoLeo self-distillation of the heads alone; the backbone never changes) and
their EMA becomes the teacher's head; the students start after that.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from dinogeo.errors import BandMismatchError, ConfigError
from dinogeo.models.backbone import Backbone
from dinogeo.models.card import WeightCard
from dinogeo.ssl.batch_types import MultiCropBatch
from dinogeo.ssl.checkpointing import sample_seed
from dinogeo.ssl.dino_head import build_head
from dinogeo.ssl.dino_loss import DINOLoss
from dinogeo.ssl.distill_config import StudentConfig, TeacherConfig
from dinogeo.ssl.distill_export import (
    gather_student_states,
    keep_local_states,
    student_card,
    write_student,
)
from dinogeo.ssl.distill_schedules import build_distill_schedules
from dinogeo.ssl.distill_step import distill_losses
from dinogeo.ssl.distill_students import (
    build_student,
    local_students,
    rank_world,
    student_patch,
    student_subgroups,
)
from dinogeo.ssl.distill_teacher import Subgroups, head_config_of, load_teacher, teacher_targets
from dinogeo.ssl.ema import ema_update
from dinogeo.ssl.ibot_loss import iBOTPatchLoss
from dinogeo.ssl.masking import make_ibot_masks
from dinogeo.ssl.module_step import ssl_losses
from dinogeo.ssl.param_groups import build_param_groups
from dinogeo.ssl.schedules import Schedule
from dinogeo.ssl.task_base import StepScheduledTask
from dinogeo.ssl.task_config import (
    DINOHeadConfig,
    LossConfig,
    OptimConfig,
    coerce,
    config_dict,
)

__all__ = ["DistillTask"]

log = logging.getLogger(__name__)

PARTS = ("backbone", "dino_head", "ibot_head")


class DistillTask(StepScheduledTask):
    """Multi-student DINOv3 distillation from a frozen teacher.

    Args:
        teacher: the teacher file and the head warm-up (when the file has no heads).
        students: one or several students (unique names); default: one ViT-S/16.
        in_chans: number of input bands (linked from the datamodule; must be the teacher's).
        band_names: the bands in order (linked from the datamodule; must be the teacher's).
        dino_head: the students' DINO head; default: the teacher's head sizes. Its number of
            prototypes must be the teacher's.
        ibot_head: the students' iBOT head, likewise.
        loss: loss weights and temperatures (``mask_ratio``/``mask_probability`` choose the
            patch positions of the iBOT term; the students' input is never masked).
        optim: optimiser and schedules of the students (the recipe's distillation: lr 0 -> peak,
            layer-wise decay 0.99, EMA 0.994 -> 1).
        autocast: ``"auto"`` (bf16 on CUDA devices that support it, else fp32), ``"bf16"`` or
            ``"fp32"``.
        seed: seed of the per-step random draws.
    """

    def __init__(
        self,
        teacher: TeacherConfig | None = None,
        students: list[StudentConfig] | None = None,
        in_chans: int = 3,
        band_names: list[str] | None = None,
        dino_head: DINOHeadConfig | None = None,
        ibot_head: DINOHeadConfig | None = None,
        loss: LossConfig | None = None,
        optim: OptimConfig | None = None,
        autocast: str = "auto",
        seed: int = 0,
    ) -> None:
        super().__init__(coerce(OptimConfig, optim), autocast, seed)
        self.teacher_cfg = coerce(TeacherConfig, teacher)
        self.student_cfgs = [coerce(StudentConfig, s) for s in (students or [StudentConfig()])]
        self.loss_cfg = coerce(LossConfig, loss)
        names = [s.name for s in self.student_cfgs]
        if len(set(names)) != len(names) or any(not n.isidentifier() for n in names):
            raise ConfigError(
                f"model.students names {names} must be unique identifiers (letters, digits, _)"
            )
        loaded = load_teacher(self.teacher_cfg.path)
        card = loaded.card
        if band_names is not None and [b.lower() for b in band_names] != [
            b.lower() for b in card.band_names
        ]:
            raise BandMismatchError(
                f"the data gives bands {band_names} but the teacher {self.teacher_cfg.path} "
                f"expects {card.band_names}: set data.bands to {card.band_names} (and data.sensor "
                f"to {card.sensor!r}), or carry the teacher over first with `dinogeo adapt "
                f"{self.teacher_cfg.path} --sensor ... -o adapted.safetensors`"
            )
        if in_chans != card.in_chans:
            raise BandMismatchError(
                f"in_chans={in_chans} but the teacher {self.teacher_cfg.path} takes "
                f"{card.in_chans} bands {card.band_names}: distil with the teacher's bands"
            )
        self.teacher_card = card
        self.teacher_provenance = loaded.provenance
        self.band_names = list(card.band_names)
        t_dim = loaded.backbone.embed_dim
        heads = loaded.heads
        if heads is not None:  # default: the teacher's head sizes
            dino_head = dino_head or head_config_of(heads["dino_head"].state_dict())
            ibot_head = ibot_head or head_config_of(heads["ibot_head"].state_dict())
        self.dino_head_cfg = coerce(DINOHeadConfig, dino_head)
        self.ibot_head_cfg = coerce(DINOHeadConfig, ibot_head)
        if heads is None:
            # fresh heads trained on the frozen teacher; their EMA (below) is the teacher's head
            self.head_warmup: nn.ModuleDict | None = nn.ModuleDict(
                {
                    "dino_head": build_head(t_dim, self.dino_head_cfg),
                    "ibot_head": build_head(t_dim, self.ibot_head_cfg),
                }
            )
            heads = {k: copy.deepcopy(v) for k, v in self.head_warmup.items()}  # type: ignore[misc]
            self.warmup_steps = int(self.teacher_cfg.head_warmup_steps)
            if self.warmup_steps < 1:
                raise ConfigError(
                    f"the teacher {self.teacher_cfg.path} has no DINO/iBOT heads: set "
                    "model.teacher.head_warmup_steps >= 1 (fresh heads are trained on the frozen "
                    "teacher first), or give a dinogeo pretrain .ckpt that holds its heads"
                )
        else:
            self.head_warmup = None
            self.warmup_steps = 0
            for name, cfg in (("dino_head", self.dino_head_cfg), ("ibot_head", self.ibot_head_cfg)):
                if cfg.out_dim != heads[name].out_dim:
                    raise ConfigError(
                        f"model.{name}.out_dim={cfg.out_dim} but the teacher's {name} has "
                        f"{heads[name].out_dim} prototypes: student and teacher heads must match"
                    )
        self.teacher = nn.ModuleDict({"backbone": loaded.backbone, **heads})
        self.teacher.requires_grad_(False)
        self.teacher.eval()
        patches = {student_patch(s) for s in self.student_cfgs}
        if len(patches) != 1:
            raise ConfigError(
                f"the students have patch sizes {sorted(patches)}: students trained together "
                "share one patch size (the iBOT positions are drawn on one grid); the teacher's "
                "may differ"
            )
        self.student_patch = patches.pop()
        self.save_hyperparameters(
            {
                "teacher": config_dict(self.teacher_cfg),
                "students": [config_dict(s) for s in self.student_cfgs],
                "in_chans": in_chans,
                "band_names": self.band_names,
                "dino_head": config_dict(self.dino_head_cfg),
                "ibot_head": config_dict(self.ibot_head_cfg),
                "loss": config_dict(self.loss_cfg),
                "optim": config_dict(self.optim_cfg),
                "autocast": autocast,
                "seed": seed,
                "teacher_provenance": self.teacher_provenance,
            }
        )
        self.in_chans = in_chans
        self.students = nn.ModuleDict()
        self.students_ema = nn.ModuleDict()
        self.subgroups = Subgroups()
        self.dino_loss = DINOLoss(self.dino_head_cfg.out_dim, self.loss_cfg.student_temp)
        self.ibot_loss = iBOTPatchLoss(self.ibot_head_cfg.out_dim, self.loss_cfg.student_temp)

    # ------------------------------------------------------------------ students
    def student_backbone(self, name: str, ema: bool = True) -> Backbone:
        """A student's backbone (its EMA by default: the one exported)."""
        store = self.students_ema if ema else self.students
        return cast(Backbone, cast(nn.ModuleDict, store[name])["backbone"])

    def local_students(self) -> list[StudentConfig]:
        """The students this rank trains: all on one process, its subgroup's otherwise."""
        return local_students(self.student_cfgs, *rank_world())

    def configure_model(self) -> None:
        """Build this rank's students (and, on several processes, the student subgroups)."""
        if len(self.students):
            return
        rank, world = rank_world()
        if world > 1:
            self.subgroups = student_subgroups(self.student_cfgs, rank, world)
            if self.head_warmup is not None:
                # identical fresh heads on every rank, averaged over all ranks (not by DDP)
                warm = [*self.head_warmup.parameters()]
                for part in ("dino_head", "ibot_head"):
                    warm += list(self.teacher[part].parameters())
                for tensor in warm:
                    dist.broadcast(tensor.data, 0)
                self._ddp_params_and_buffers_to_ignore = [
                    f"head_warmup.{n}" for n, _ in self.head_warmup.named_parameters()
                ]
        for cfg in self.local_students():
            student, ema = build_student(
                cfg, self.in_chans, self.dino_head_cfg, self.ibot_head_cfg, self.seed
            )
            self.students[cfg.name] = student
            self.students_ema[cfg.name] = ema

    def train(self, mode: bool = True) -> DistillTask:
        """Set the students' mode; the teacher and the students' EMA always stay in eval mode."""
        super().train(mode)
        self.teacher.eval()
        self.students_ema.eval()
        return self

    def forward(self, x: Tensor) -> Tensor:
        """The first local student's EMA cls features of a normalised batch ``(B, C, H, W)``."""
        name = next(iter(self.students_ema))
        return self.student_backbone(name).forward_features(x)["x_norm_clstoken"]

    # ------------------------------------------------------------------ schedules
    def build_schedules(self, total_steps: int, global_batch: int) -> dict[str, Schedule]:
        """Per-step schedules (:func:`~dinogeo.ssl.distill_schedules.build_distill_schedules`)."""
        return build_distill_schedules(
            self.optim_cfg, self.loss_cfg, self.warmup_steps, total_steps, global_batch
        )

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self) -> torch.optim.Optimizer:
        """AdamW over every local student's recipe parameter groups (and the warm-up heads)."""
        groups: list[dict[str, Any]] = []
        modules: dict[str, nn.Module] = {}
        for name, student in self.students.items():
            for part in PARTS:
                modules[f"{name}.{part}"] = cast(nn.ModuleDict, student)[part]
        if self.head_warmup is not None:
            for part, head in self.head_warmup.items():
                modules[f"head_warmup.{part}"] = head
        for key, module in modules.items():
            depth = getattr(module, "depth", None)
            if depth is None:
                name = key.split(".")[0]
                depth = self.student_backbone(name).depth if name in self.students else 0
            for group in build_param_groups(
                ((f"{key}.{n}", p) for n, p in module.named_parameters()),
                n_blocks=int(depth),
                layer_decay=self.optim_cfg.layerwise_decay,
                patch_embed_lr_mult=self.optim_cfg.patch_embed_lr_mult,
            ):
                group["module"] = key
                group.pop("names", None)
                groups.append(group)
        b1, b2 = (float(b) for b in self.optim_cfg.betas)
        fused = self.device.type in {"cuda", "cpu"}
        return torch.optim.AdamW(groups, lr=self.optim_cfg.lr, betas=(b1, b2), fused=fused)

    def apply_optim_values(self, step: int) -> None:
        """Step ``step``'s lr (the warm-up heads': ``head_lr``) and weight decay per group."""
        optimizer = cast(torch.optim.Optimizer, self.optimizers(use_pl_optimizer=False))
        lr, wd, head_lr = (self._schedule(k, step) for k in ("lr", "wd", "head_lr"))
        frozen_last = step < self.warmup_steps + self.optim_cfg.freeze_last_layer_steps
        for group in optimizer.param_groups:
            warm_group = str(group.get("module", "")).startswith("head_warmup.")
            value = (head_lr if warm_group else lr) * group.get("lr_multiplier", 1.0)
            if group.get("is_last_layer") and frozen_last and not warm_group:
                value = 0.0
            group["lr"] = value
            group["weight_decay"] = wd * group.get("wd_multiplier", 1.0)

    def configure_gradient_clipping(
        self,
        optimizer: torch.optim.Optimizer,
        gradient_clip_val: int | float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """Average the warm-up heads' gradients over all ranks; clip every module separately."""
        _, world = rank_world()
        if self.head_warmup is not None and world > 1 and self.global_step < self.warmup_steps:
            for p in self.head_warmup.parameters():
                if p.grad is not None:
                    dist.all_reduce(p.grad)
                    p.grad /= world
        modules: dict[str, nn.Module] = {
            f"{n}.{part}": cast(nn.ModuleDict, s)[part]
            for n, s in self.students.items()
            for part in PARTS
        }
        if self.head_warmup is not None:
            modules.update({f"head_warmup.{k}": v for k, v in self.head_warmup.items()})
        self.clip_modules(modules)

    # ------------------------------------------------------------------ training
    def on_fit_start(self) -> None:
        """Check that the data are normalised as the teacher was trained; reset the schedules."""
        self._schedules = {}
        sensor = getattr(getattr(self.trainer, "datamodule", None), "sensor", None)
        if sensor is None:
            return
        card = self.teacher_card
        mean = [b.mean for b in sensor.bands]
        std = [b.std for b in sensor.bands]
        if not (np.allclose(mean, card.mean, rtol=1e-4) and np.allclose(std, card.std, rtol=1e-4)):
            raise ConfigError(
                f"the data's sensor {sensor.name!r} normalises with mean {mean} / std {std} but "
                f"the teacher {self.teacher_cfg.path} was trained with mean {card.mean} / std "
                f"{card.std}: set data.sensor to the teacher's sensor {card.sensor!r} (or a "
                "sensor YAML with its statistics)"
            )

    def _teacher_grid_batch(self, batch: MultiCropBatch) -> MultiCropBatch:
        """The batch with its iBOT masks redrawn on the teacher's grid (head warm-up only)."""
        patch = cast(Backbone, self.teacher["backbone"]).patch_size
        if patch == self.student_patch:
            return batch
        crops: Tensor = batch["global_crops"]
        grid = (crops.shape[-2] // patch, crops.shape[-1] // patch)
        gen = torch.Generator().manual_seed(sample_seed(self.seed, self.global_step, 1))
        masks = make_ibot_masks(
            crops.shape[0], grid, self.loss_cfg.mask_ratio, self.loss_cfg.mask_probability,
            generator=gen,
        ).to(crops.device)  # fmt: skip
        per_image = masks.sum(dim=-1, keepdim=True).clamp(min=1).float()
        return {
            **batch,
            "masks": masks,
            "mask_indices": masks.flatten().nonzero().flatten(),
            "masks_weight": (1.0 / per_image).expand_as(masks)[masks],
        }

    def training_step(self, batch: MultiCropBatch, batch_idx: int) -> Tensor:
        """Teacher-head warm-up steps first (if needed), then the students' distillation losses."""
        step = self.global_step
        temp = self._schedule("teacher_temp", step)
        batch_size = batch["global_crops"].shape[0] // 2
        if step < self.warmup_steps and self.head_warmup is not None:
            t_backbone = self.teacher["backbone"]
            with self._autocast():
                out = ssl_losses(
                    nn.ModuleDict({"backbone": t_backbone, **self.head_warmup}),
                    self.teacher,
                    self._teacher_grid_batch(batch),
                    dino_loss=self.dino_loss,
                    ibot_loss=self.ibot_loss,
                    loss_cfg=dataclasses.replace(self.loss_cfg, koleo_weight=0.0),
                    teacher_temp=temp,
                )
            loss = out.loss
            if self.subgroups.world > 1:  # DDP expects its (student) parameters in the graph
                loss = loss + 0.0 * sum(p.sum() for p in self.students.parameters())
            logs = {f"head_warmup/{k.split('/')[-1]}": v for k, v in out.logs.items()}
            self.log_dict(logs, on_step=True, on_epoch=False, batch_size=batch_size)
            self.log("loss", out.loss.detach(), prog_bar=True, logger=False, batch_size=batch_size)
            return loss
        with self._autocast():
            targets = teacher_targets(
                cast(Backbone, self.teacher["backbone"]),
                self.teacher,
                batch,
                student_patch=self.student_patch,
                teacher_temp=temp,
                sinkhorn_iterations=self.loss_cfg.sinkhorn_iterations,
                subgroups=self.subgroups,
            )
            total = torch.zeros((), device=self.device)
            for name, student in self.students.items():
                out = distill_losses(
                    cast(nn.ModuleDict, student),
                    targets,
                    dino_loss=self.dino_loss,
                    ibot_loss=self.ibot_loss,
                    loss_cfg=self.loss_cfg,
                    prefix=f"{name}/",
                )
                self.log_dict(out.logs, on_step=True, on_epoch=False, batch_size=batch_size)
                total = total + out.loss
        self.log("loss", total.detach(), prog_bar=True, logger=False, batch_size=batch_size)
        scheds = {
            "sched/lr": self._schedule("lr", step),
            "sched/momentum": self._schedule("momentum", step),
            "sched/teacher_temp": temp,
        }
        self.log_dict(scheds, on_step=True, on_epoch=False, batch_size=batch_size)
        return total

    def optimizer_step(
        self,
        epoch: int,
        batch_idx: int,
        optimizer: Any,
        optimizer_closure: Any = None,
    ) -> None:
        """Step the optimizer, then update the EMA of the students (or of the warm-up heads)."""
        step = self.global_step
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        if step < self.warmup_steps and self.head_warmup is not None:
            for part, head in self.head_warmup.items():
                ema_update(
                    list(self.teacher[part].parameters()),
                    list(head.parameters()),
                    self.teacher_cfg.head_momentum,
                )
            return
        momentum = self._schedule("momentum", step)
        for name, student in self.students.items():
            ema_update(
                list(self.students_ema[name].parameters()), list(student.parameters()), momentum
            )

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """On several processes, collect every subgroup's student and optimizer state."""
        _, world = rank_world()
        if world == 1:
            return
        lead = self.local_students()[0].name if self.subgroups.rank == 0 else None
        gather_student_states(checkpoint, self.state_dict(), lead, world)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep this rank's students' weights and optimizer state from a checkpoint."""
        keep_local_states(checkpoint, {cfg.name for cfg in self.local_students()})

    # ------------------------------------------------------------------ export
    def student_card(self, name: str) -> WeightCard | None:
        """The weight card of a student's EMA backbone (``None`` without a datamodule sensor)."""
        trainer = self._trainer
        datamodule = getattr(trainer, "datamodule", None)
        sensor = getattr(datamodule, "sensor", None)
        if sensor is None:
            return None
        data = getattr(datamodule, "hparams", None)
        facts = None
        if trainer is not None:
            facts = {"max_steps": trainer.max_steps, "world_size": trainer.world_size}
        return student_card(
            self.student_backbone(name),
            sensor,
            name,
            dict(self.hparams),
            self.teacher_provenance,
            data=dict(data) if data is not None else None,
            trainer=facts,
        )

    def export_students(self) -> dict[str, Path]:
        """Write each local student's EMA backbone with its card (subgroup rank 0 writes)."""
        written: dict[str, Path] = {}
        if self.subgroups.rank != 0:
            return written
        for cfg in self.local_students():
            if not cfg.export_path:
                continue
            card = self.student_card(cfg.name)
            if card is None:
                log.warning("no datamodule sensor: student %s was not exported", cfg.name)
                continue
            path = Path(cfg.export_path)
            written[cfg.name] = write_student(path, self.student_backbone(cfg.name), card, cfg.name)
        return written

    def on_train_end(self) -> None:
        """Export the students' EMA backbones."""
        self.export_students()
