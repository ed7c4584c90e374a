"""Starting weights from a file read on global rank 0 only, broadcast into (FSDP-sharded) backbones.

Under FSDP every rank used to build the full backbone from the file (memory-mapped, shared with
the teachers) and only then shard it, so every rank touched every page of the checkpoint and
held the full weights while it sharded them. With ``model.init.load_on_rank0``
(configs/ssl/fsdp.yaml) the task keeps its backbones on the meta device until Lightning's
``configure_model`` hook, which then

1. reads the file on global rank 0 (:func:`read_on_rank0`, memory-mapped); the other ranks never
   open it (it need not exist on other nodes) and learn from rank 0 whether it holds the SAT
   ViT-L / 7B ``local_cls_norm`` and whether it fits the model;
2. shards the still empty backbones and gives each rank storage for its own shards only
   (:func:`~dinogeo.models.materialise.materialise_empty`);
3. broadcasts the file's tensors from rank 0 one at a time (:func:`load_from_rank0`:
   ``set_model_state_dict`` with ``full_state_dict`` and ``broadcast_from_rank0``); each rank
   keeps its slice of each;
4. copies the EMA and Gram teachers from the student shard by shard
   (:func:`~dinogeo.ssl.ema.copy_weights`).

Without a process group (one process) the same functions read and load locally.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch.distributed as dist
from torch import Tensor, nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

from dinogeo.errors import CheckpointError
from dinogeo.models.backbone import Backbone
from dinogeo.models.init_weights import backbone_file_state
from dinogeo.models.materialise import check_weights

__all__ = ["is_reader", "load_from_rank0", "read_on_rank0"]

_NORM = "local_cls_norm."


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def is_reader() -> bool:
    """Whether this process reads start files: global rank 0, or the only process."""
    return not _distributed() or dist.get_rank() == 0


def read_on_rank0(
    path: str | Path,
    arch: str,
    targets: Sequence[Backbone],
    *,
    band_names: Sequence[str] | None = None,
    hint: str = "",
) -> dict[str, Tensor]:
    """The backbone state in ``path``, read on global rank 0 only; ``{}`` on the other ranks.

    Every rank must call it. If the file holds a ``local_cls_norm``, every rank adds one to each
    of ``targets`` (still on the meta device, before sharding), so that all ranks build the same
    modules. Rank 0 checks the file's keys and shapes against ``targets[0]``.

    Args:
        path: as :func:`~dinogeo.models.init_weights.backbone_file_state` reads.
        arch: the backbone architecture.
        targets: the backbones the state is for (the student, then the copies built alike).
        band_names: bands to expand an official RGB patch embedding to.
        hint: appended to the error message.

    Returns:
        The state (tensors memory-mapped where the format allows) on rank 0, ``{}`` elsewhere.

    Raises:
        CheckpointError: on every rank, if rank 0 could not read the file or it does not fit.
    """
    state: dict[str, Tensor] = {}
    message: str | None = None
    norm = False
    if is_reader():
        try:
            state = backbone_file_state(path, arch, band_names=band_names)
            norm = any(key.startswith(_NORM) for key in state)
            if norm:
                targets[0].add_local_cls_norm()
            check_weights(targets[0], state, source=str(path))
        except CheckpointError as err:
            message, state = f"{err}{hint}", {}
    if _distributed():
        box: list[object] = [message, norm]
        dist.broadcast_object_list(box, src=0)
        message, norm = box[0] if box[0] is None else str(box[0]), bool(box[1])
    if message is not None:
        raise CheckpointError(message)
    if norm:
        for target in targets:
            target.add_local_cls_norm()  # does nothing where it already has one
    return state


def load_from_rank0(module: nn.Module, state: Mapping[str, Tensor]) -> None:
    """Fill ``module``'s materialised (and maybe FSDP-sharded) tensors with rank 0's ``state``.

    Every rank must call it. In a process group the tensors are broadcast from rank 0 one at a
    time and each rank copies its shard out of each (other ranks pass ``{}``); alone, the state
    is loaded as ``load_state_dict`` does. Dtypes are converted to the module's.

    Args:
        module: the module, after :func:`~dinogeo.models.materialise.materialise_empty`.
        state: its full state dict (checked by :func:`read_on_rank0`) on rank 0.
    """
    if not _distributed():
        module.load_state_dict(state, strict=True)
        return
    options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True, strict=True)
    set_model_state_dict(module, dict(state) if is_reader() else {}, options=options)
