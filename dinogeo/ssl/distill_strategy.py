"""``DistillDDPStrategy``: data parallelism within each student's subgroup of ranks.

In multi-student distillation every rank holds the teacher and one student; ranks of the same
student form a subgroup (built by :meth:`DistillTask.configure_model
<dinogeo.ssl.distill_task.DistillTask.configure_model>`), and DistributedDataParallel averages the
student's gradients over that subgroup only. The teacher's targets are computed on all ranks and
gathered into each subgroup by the task itself.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch.strategies import DDPStrategy
from torch.nn import Module
from torch.nn.parallel import DistributedDataParallel

from dinogeo.errors import ConfigError

__all__ = ["DistillDDPStrategy"]


class DistillDDPStrategy(DDPStrategy):
    """Lightning's DDP with the process group of this rank's student.

    Args:
        **kwargs: :class:`~lightning.pytorch.strategies.DDPStrategy` options; the process group
            is set from the task and ``find_unused_parameters`` defaults to True (the students
            train only after the teacher-head warm-up).
    """

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("find_unused_parameters", True)
        super().__init__(**kwargs)

    def _setup_model(self, model: Module) -> DistributedDataParallel:
        subgroups = getattr(model, "subgroups", None)
        if subgroups is None:
            raise ConfigError(
                "DistillDDPStrategy trains a DistillTask (stage: distill); use DDPStrategy or "
                "SSLFSDPStrategy for pretraining"
            )
        self._ddp_kwargs["process_group"] = subgroups.group
        return super()._setup_model(model)
