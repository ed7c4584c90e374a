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
        find_unused_parameters: DDP's option (True by default: nothing of the students is used
            during a teacher-head warm-up).
        **kwargs: the other :class:`~lightning.pytorch.strategies.DDPStrategy` options; the
            process group is set from the task.
    """

    def __init__(self, find_unused_parameters: bool = True, **kwargs: Any) -> None:
        super().__init__(find_unused_parameters=find_unused_parameters, **kwargs)

    def _setup_model(self, model: Module) -> DistributedDataParallel:
        subgroups = getattr(model, "subgroups", None)
        if subgroups is None:
            raise ConfigError(
                "DistillDDPStrategy trains a DistillTask (stage: distill); use DDPStrategy or "
                "SSLFSDPStrategy for pretraining"
            )
        self._ddp_kwargs["process_group"] = subgroups.group
        return super()._setup_model(model)
