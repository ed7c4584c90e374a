"""Build big backbones without spare copies: meta-device construction, assigned weights, shared twins.

Continued pretraining of a 7B checkpoint used to hold four to five full copies of the weights in
host memory per rank (a random initialisation, the whole ``.pth``, an empty backbone, deep copies
for the EMA and Gram teachers). These primitives keep it to the weights themselves:

* :func:`meta_backbone` builds a :class:`~dinogeo.models.backbone.Backbone` on the ``meta``
  device: no memory, no random initialisation;
* :func:`assign_weights` makes a state dict's tensors the module's parameters
  (``load_state_dict(assign=True)``), so tensors memory-mapped from a checkpoint
  (``torch.load(mmap=True)``, safetensors) become the weights without a copy; only tensors whose
  dtype differs are converted, and the computed buffers (RoPE periods, the zero k bias) are made;
* :func:`materialise_empty` gives a meta module (FSDP-sharded or not) uninitialised storage on a
  device, to be filled by a state dict load (:func:`check_weights` checks such a state first);
* :func:`shared_copy` returns a structural copy whose parameters and buffers share storage with
  the original (the EMA and Gram teachers start equal to the student), and :func:`unshare` gives
  such a copy its own storage once it is about to diverge. Moving a module to an accelerator
  (``.to("cuda")``) or wrapping it with FSDP already gives every tensor its own storage.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch
from timm.models._manipulate import reinit_non_persistent_buffers
from torch import Tensor, nn

from dinogeo.errors import CheckpointError
from dinogeo.models.backbone import Backbone, create_backbone

__all__ = [
    "assign_weights",
    "check_weights",
    "materialise_empty",
    "meta_backbone",
    "shared_copy",
    "shares_storage",
    "unshare",
]


def meta_backbone(arch: str, in_chans: int = 3, **kwargs: Any) -> Backbone:
    """A :func:`~dinogeo.models.backbone.create_backbone` backbone on the ``meta`` device.

    Its tensors have shapes and dtypes but no storage; fill it with :func:`assign_weights`.
    """
    with torch.device("meta"):
        return create_backbone(arch, in_chans, **kwargs)


def check_weights(module: nn.Module, state: Mapping[str, Tensor], *, source: str) -> None:
    """Check that ``state`` has exactly ``module``'s parameter and persistent buffer names and shapes.

    The module may be on the meta device or FSDP-sharded (a DTensor's shape is the full shape).

    Raises:
        CheckpointError: naming ``source``, for missing or unexpected keys or another shape.
    """
    own = module.state_dict(keep_vars=True)
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise CheckpointError(
            f"{source} does not fit the model: missing {missing[:6]}, unexpected "
            f"{unexpected[:6]}; use a checkpoint of the same architecture and bands"
        )
    for key, target in own.items():
        value = state[key]
        if tuple(value.shape) != tuple(target.shape):
            raise CheckpointError(
                f"{source}: {key} has shape {tuple(value.shape)} but the model expects "
                f"{tuple(target.shape)}; use a checkpoint of the same architecture and bands"
            )


def materialise_empty(module: nn.Module, device: torch.device) -> None:
    """Give a meta (or FSDP-sharded meta) module uninitialised storage on ``device``.

    Parameters and persistent buffers are left to be filled (a state dict load or a copy); the
    computed non-persistent buffers (RoPE periods, the zero k bias) are computed here. Under
    FSDP each rank allocates its own shards only.
    """
    module.to_empty(device=device)
    reinit_non_persistent_buffers(module)


def assign_weights(module: nn.Module, state: Mapping[str, Tensor], *, source: str) -> None:
    """Make ``state``'s tensors the parameters and persistent buffers of a (meta) module.

    Tensors are used as they are (a memory-mapped checkpoint stays mapped; nothing is copied)
    unless their dtype differs from the module's, which converts them as ``load_state_dict``
    would. Non-persistent buffers still on the meta device are then created on the CPU and
    computed (``init_non_persistent_buffers``: RoPE periods, the zero k bias).

    Args:
        module: the module, typically from :func:`meta_backbone`.
        state: every parameter and persistent buffer of ``module`` (strict).
        source: the file the weights come from, for error messages.

    Raises:
        CheckpointError: if keys or shapes differ from the module's.
    """
    own = module.state_dict(keep_vars=True)
    check_weights(module, state, source=source)
    typed: dict[str, Tensor] = {}
    for key, target in own.items():
        value = state[key]
        typed[key] = value if value.dtype == target.dtype else value.to(target.dtype)
    module.load_state_dict(typed, strict=True, assign=True)
    for sub in module.modules():
        for name, buf in list(sub._buffers.items()):
            if buf is not None and buf.is_meta:
                sub._buffers[name] = torch.empty_like(buf, device="cpu")
    reinit_non_persistent_buffers(module)
    left = [name for name, t in (*module.named_parameters(), *module.named_buffers()) if t.is_meta]
    if left:
        raise CheckpointError(f"{source}: no weights for {left[:6]}")


def shared_copy[M: nn.Module](module: M) -> M:
    """A copy of ``module`` whose parameters and buffers share storage with the original.

    The copy has its own ``Parameter`` objects (its own ``requires_grad``), so freezing it does not
    freeze the original, but writing into one writes into both: call :func:`unshare` before
    either changes (an optimizer step, an EMA update, ``load_state_dict``).
    """
    memo: dict[int, Any] = {}
    for param in module.parameters():
        memo[id(param)] = nn.Parameter(param.detach(), requires_grad=param.requires_grad)
    for buf in module.buffers():
        memo[id(buf)] = buf.detach()
    return copy.deepcopy(module, memo)


def _storage_keys(module: nn.Module) -> set[int]:
    return {
        t.untyped_storage().data_ptr()
        for t in (*module.parameters(), *module.buffers())
        if not t.is_meta and t.numel()
    }


def shares_storage(module: nn.Module, other: nn.Module) -> bool:
    """Whether any parameter or buffer of ``module`` lives in the storage of one of ``other``'s."""
    return bool(_storage_keys(module) & _storage_keys(other))


@torch.no_grad()
def unshare(module: nn.Module, *others: nn.Module) -> int:
    """Give ``module`` its own copy of every tensor it shares with ``others``; return the bytes copied.

    Parameters keep their ``Parameter`` objects (optimizers holding them stay valid); only their
    data is replaced.
    """
    taken = set().union(*(_storage_keys(o) for o in others)) if others else set()
    copied = 0
    for sub in module.modules():
        for param in sub._parameters.values():
            if param is not None and param.untyped_storage().data_ptr() in taken:
                param.data = param.detach().clone()
                copied += param.numel() * param.element_size()
        for name, buf in list(sub._buffers.items()):
            if buf is not None and buf.untyped_storage().data_ptr() in taken:
                sub._buffers[name] = buf.detach().clone()
                copied += buf.numel() * buf.element_size()
    return copied
