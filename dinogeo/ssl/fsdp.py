"""FSDP2 (``torch.distributed.fsdp.fully_shard``) for :class:`~dinogeo.ssl.module.SSLTask`.

Every transformer block, every backbone (student, EMA teacher, Gram teacher) and every head is
its own ``fully_shard`` unit over the data-parallel mesh, as in DINOv3's own FSDP2 setup. Student
and teacher units then have identical layouts (each rank holds the same row slice of every
tensor), so the teacher EMA and the Gram-teacher refresh run shard by shard on the local
tensors. Parameters keep their names (layer-wise decay and per-module clipping read them).
``Backbone.forward_features`` is registered as a forward method, so calling it all-gathers the
backbone's own parameters as ``forward`` does.

Gradients are averaged over ranks by reduce-scatter; per-module clipping all-reduces the squared
norms of the shards (:func:`~dinogeo.ssl.grad_clip.clip_gradients_per_module`), so every rank
clips by the global norm. It runs on GPUs (NCCL) and on CPU processes (gloo), where the tests
rehearse it.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.strategies import ModelParallelStrategy
from torch import nn
from torch.distributed.checkpoint.filesystem import FileSystemReader
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import FSDPModule, fully_shard, register_fsdp_forward_method

from dinogeo.errors import CheckpointError, ConfigError
from dinogeo.models.backbone import Backbone
from dinogeo.ssl.dino_head import DINOHead

__all__ = ["SSLFSDPStrategy", "full_state_dict", "is_sharded", "shard_modules"]

_GRAM = "gram_teacher."


def _units(module: nn.Module) -> Iterator[nn.Module]:
    """Backbones and heads below ``module``, outermost first."""
    for sub in module.modules():
        if isinstance(sub, Backbone | DINOHead):
            yield sub


def is_sharded(module: nn.Module) -> bool:
    """Whether ``module`` holds FSDP2 units (its parameters are DTensor shards)."""
    return any(isinstance(sub, FSDPModule) for sub in module.modules())


def shard_modules(
    module: nn.Module, mesh: DeviceMesh, *, reshard_after_forward: bool = True
) -> nn.Module:
    """``fully_shard`` every block, backbone and DINO/iBOT head of ``module`` (in place).

    Blocks are sharded before their backbone, so each block is a unit and the backbone unit
    holds the rest (patch embedding, tokens, norms). A module already sharded is left as is.

    Args:
        module: an SSL task (or any module holding :class:`Backbone` / :class:`DINOHead`).
        mesh: the 1-D data-parallel device mesh.
        reshard_after_forward: free the gathered parameters after each forward (less memory,
            one more all-gather in backward).

    Returns:
        ``module``.
    """
    if is_sharded(module):
        return module
    for unit in list(_units(module)):
        if isinstance(unit, Backbone):
            for block in unit.blocks:
                fully_shard(block, mesh=mesh, reshard_after_forward=reshard_after_forward)
        fully_shard(unit, mesh=mesh, reshard_after_forward=reshard_after_forward)
        if isinstance(unit, Backbone):
            register_fsdp_forward_method(unit, "forward_features")
    return module


def full_state_dict(module: nn.Module) -> dict[str, Any]:
    """The full (unsharded) state dict: gathered on rank 0 under FSDP, ``{}`` on other ranks.

    Every rank must call it when ``module`` is sharded (it all-gathers).
    """
    if not is_sharded(module):
        return module.state_dict()
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_model_state_dict(module, options=options)


class SSLFSDPStrategy(ModelParallelStrategy):
    """Lightning's FSDP2 strategy (``ModelParallelStrategy``), all ranks data-parallel.

    The task's ``configure_model`` hook calls :meth:`shard`, which applies
    :func:`shard_modules` over the data-parallel mesh.

    Args:
        reshard_after_forward: see :func:`shard_modules`.
        save_distributed_checkpoint: ``True``: each rank writes its shards (a checkpoint folder,
            no full copy anywhere; for ViT-L and up); ``False``: rank 0 gathers one full
            ``.ckpt`` file that ``load_backbone`` and ``gram.ckpt`` read.
        process_group_backend: ``nccl`` on GPUs, ``gloo`` on CPU (default: from the device).
        timeout: collective timeout.
    """

    def __init__(
        self,
        reshard_after_forward: bool = True,
        save_distributed_checkpoint: bool = False,
        process_group_backend: str | None = None,
        timeout: timedelta | None = timedelta(minutes=30),
    ) -> None:
        super().__init__(
            data_parallel_size="auto",
            tensor_parallel_size=1,
            save_distributed_checkpoint=save_distributed_checkpoint,
            process_group_backend=process_group_backend,
            timeout=timeout,
        )
        self.reshard_after_forward = reshard_after_forward

    def setup_environment(self) -> None:
        """Use every process for data parallelism (FSDP), none for tensor parallelism."""
        # Backbone.forward_features returns views of its last activations (cls, registers,
        # patches); the SSL steps never modify them in place (tests/ssl/test_distributed_step.py
        # checks the gradients against one process), so FSDP2's warning about views is noise
        warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module \(FSDPBackbone\)")
        self._data_parallel_size = self.num_nodes * self.num_processes
        self._tensor_parallel_size = 1
        super().setup_environment()

    def setup(self, trainer: pl.Trainer) -> None:
        """Check that the task sharded itself (``configure_model``), then set up as Lightning.

        Raises:
            ConfigError: for a task that does not shard under this strategy (distillation).
        """
        module = self.lightning_module
        if module is None or not is_sharded(module):
            raise ConfigError(
                f"SSLFSDPStrategy shards an SSLTask (stage: ssl), not {type(module).__name__}: "
                "distil with DistillDDPStrategy (configs/ssl/distill_ddp.yaml)"
            )
        super().setup(trainer)

    def shard(self, module: nn.Module) -> nn.Module:
        """Shard ``module``'s blocks, backbones and heads over the data-parallel mesh."""
        return shard_modules(
            module,
            self.device_mesh["data_parallel"],
            reshard_after_forward=self.reshard_after_forward,
        )

    def load_checkpoint(
        self, checkpoint_path: str | Path, weights_only: bool | None = None
    ) -> dict[str, Any]:
        """Resume as Lightning does, also from a stage-1 checkpoint without a Gram teacher.

        Stage 2 (Gram anchoring) resumes stage 1's checkpoint, which has no Gram-teacher
        weights. The strategy loads the model state here, before the module's
        ``on_load_checkpoint`` hook could fill them in, so for such a checkpoint (a full file or
        a sharded folder) the Gram teacher is left out of the load (it is then initialised from
        the EMA teacher at start, as without FSDP); every other parameter must be in the
        checkpoint, and the load stays strict for them.

        Args:
            checkpoint_path: the ``.ckpt`` file or sharded checkpoint folder.
            weights_only: passed on to Lightning.

        Returns:
            The checkpoint's remaining entries, as ``ModelParallelStrategy.load_checkpoint``.

        Raises:
            CheckpointError: if a non-Gram parameter of the model is missing from the checkpoint.
        """
        path = Path(self.broadcast(str(checkpoint_path)))
        module = self.lightning_module
        if module is None or getattr(module, "gram_teacher", None) is None:
            return super().load_checkpoint(path, weights_only=weights_only)
        keys = _checkpoint_keys(path)
        if any(key.startswith(_GRAM) for key in keys):
            return super().load_checkpoint(path, weights_only=weights_only)
        names = [name for name, _ in module.named_parameters()]
        missing = sorted(n for n in names if not n.startswith(_GRAM) and n not in keys)
        if missing:
            raise CheckpointError(
                f"checkpoint {path} lacks {len(missing)} model parameters (first: {missing[:3]}): "
                "it is not a checkpoint of this model; resume from one written by the same "
                "architecture and heads"
            )
        task: Any = module  # an SSLTask
        gram = task.gram_teacher
        task.gram_teacher = None  # out of the state dict the checkpoint is loaded into
        try:
            return super().load_checkpoint(path, weights_only=weights_only)
        finally:
            task.gram_teacher = gram


def _checkpoint_keys(path: Path) -> set[str]:
    """Model state keys of a full ``.ckpt`` file or a sharded (distributed) checkpoint folder."""
    if path.is_dir():
        metadata = FileSystemReader(str(path)).read_metadata()
        prefix = "state_dict."
        return {k[len(prefix) :] for k in metadata.state_dict_metadata if k.startswith(prefix)}
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found; fix --ckpt_path")
    # mmap: only the key list is read here; Lightning reads the tensors later
    state = torch.load(path, map_location="cpu", mmap=True, weights_only=False)
    return set(state.get("state_dict", {}))
