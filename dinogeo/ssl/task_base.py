"""``StepScheduledTask``: what pretraining and distillation share around their training step.

Both :class:`~dinogeo.ssl.module.SSLTask` and :class:`~dinogeo.ssl.distill_task.DistillTask`
set every value of a step (learning rate, weight decay, momentum, temperature...) from schedules
indexed by the global step and sized by the run, scale the learning rate by the global batch,
seed each step's random draws from ``(seed, step, rank)``, run under the same autocast policy and
clip each module's gradients by its global norm (also under FSDP) with the norms logged.
"""

from __future__ import annotations

import contextlib
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor, nn

from dinogeo.errors import ConfigError
from dinogeo.ssl.checkpointing import sample_seed
from dinogeo.ssl.grad_clip import clip_gradients_per_module
from dinogeo.ssl.schedules import Schedule
from dinogeo.ssl.task_config import OptimConfig

__all__ = ["AUTOCAST_MODES", "StepScheduledTask"]

#: the values of the tasks' ``autocast`` option
AUTOCAST_MODES = ("auto", "bf16", "fp32")


class StepScheduledTask(pl.LightningModule):
    """Base of the SSL tasks: per-step schedules, global batch, autocast, seeding, clipping.

    Subclasses implement :meth:`build_schedules` and :meth:`apply_optim_values`.

    Args:
        optim: the optimiser and schedule options (``schedule_steps``, ``clip_grad``...).
        autocast: ``"auto"`` (bf16 on CUDA devices that support it, else fp32), ``"bf16"`` or
            ``"fp32"``.
        seed: seed of the per-step random draws.

    Raises:
        ConfigError: for an unknown ``autocast``.
    """

    def __init__(self, optim: OptimConfig, autocast: str, seed: int) -> None:
        super().__init__()
        if autocast not in AUTOCAST_MODES:
            raise ConfigError(f"autocast={autocast!r}: use 'auto', 'bf16' or 'fp32'")
        self.optim_cfg = optim
        self.autocast_mode = autocast
        self.seed = seed
        self._schedules: dict[str, Schedule] = {}

    # ------------------------------------------------------------------ schedules
    def _total_steps(self) -> int:
        if self.optim_cfg.schedule_steps:
            return int(self.optim_cfg.schedule_steps)
        trainer = self._trainer
        if trainer is not None and trainer.max_steps and trainer.max_steps > 0:
            return int(trainer.max_steps)
        if trainer is not None:
            estimated = trainer.estimated_stepping_batches
            if estimated and estimated != float("inf"):
                return int(estimated)
        raise ConfigError(
            "cannot size the schedules: set trainer.max_steps or model.optim.schedule_steps"
        )

    def global_batch_size(self) -> int:
        """Images per optimizer step over all ranks and accumulation steps."""
        trainer = self._trainer
        per_rank = int(getattr(getattr(trainer, "datamodule", None), "batch_size", 0) or 0)
        if trainer is None or per_rank == 0:
            return max(per_rank, 1)
        return per_rank * trainer.world_size * trainer.accumulate_grad_batches

    def build_schedules(self, total_steps: int, global_batch: int) -> dict[str, Schedule]:
        """The run's per-step schedules by name (``lr``, ``wd``, ``momentum``, ...).

        Args:
            total_steps: length of the schedules.
            global_batch: global batch size for the learning-rate scaling rule.
        """
        raise NotImplementedError

    def _schedule(self, name: str, step: int) -> float:
        if not self._schedules:
            self._schedules = self.build_schedules(self._total_steps(), self.global_batch_size())
        return self._schedules[name][step]

    def apply_optim_values(self, step: int) -> None:
        """Write step ``step``'s learning rates and weight decays into the optimizer groups."""
        raise NotImplementedError

    # ------------------------------------------------------------------ the step
    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        mode = self.autocast_mode
        if mode == "fp32":
            return contextlib.nullcontext()
        if self.device.type == "cuda" and (mode == "bf16" or torch.cuda.is_bf16_supported()):
            return torch.autocast("cuda", dtype=torch.bfloat16)
        if mode == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        """Seed this step's random draws and set its learning rates and weight decay."""
        step = self.global_step
        torch.manual_seed(sample_seed(self.seed, step, self.global_rank))
        self.apply_optim_values(step)

    def clip_modules(self, modules: dict[str, nn.Module]) -> dict[str, Tensor]:
        """Clip each module's gradients to ``optim.clip_grad`` by its global norm; log the norms.

        Under FSDP every rank calls this with the same modules (the norms are all-reduced).

        Returns:
            Name -> norm before clipping (empty when ``clip_grad`` is 0: no clipping).
        """
        if self.optim_cfg.clip_grad <= 0:
            return {}
        norms = clip_gradients_per_module(modules, self.optim_cfg.clip_grad)
        for name, value in norms.items():
            self.log(f"grad_norm/{name}", value.float(), on_step=True, on_epoch=False)
        return norms
