"""The DINOv3 backbone: timm's ``Eva`` ViT plus the pieces self-supervised training needs.

timm 1.0.31 ships the DINOv3 ViTs (``timm.models.eva.Eva`` with ``rope_type='dinov3'``) but no
mask token and no dict of cls/register/patch outputs. :class:`Backbone` wraps the timm model and
re-runs the steps of ``Eva.forward_features`` through its own submodules (``patch_embed``,
``_pos_embed``, ``norm_pre``, ``blocks``, ``norm``) so that masked patch embeddings can be
replaced by the mask token before the prefix tokens are added, as in the DINOv3 spec. Without a
mask the computation is exactly timm's (tested bit for bit).

As in Meta's code, in train mode:

* drop path drops the residual branch of a random subset of the batch, the same rate at every
  depth (:class:`BatchSubsetDropPath`; Meta also skips computing the dropped samples' branch,
  dinogeo computes and zeroes it);
* RoPE coordinate rescaling (factor 2 by default) is drawn anew for every block.

The optional ``local_cls_norm`` of the 7B and SAT ViT-L checkpoints (Meta's
``untie_global_and_local_cls_norm``) is kept: in train mode it normalises the cls and register
tokens of local crops (``forward_features(..., local_crops=True)``), as in Meta's training.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any, cast

import timm
import torch
from timm.models._manipulate import checkpoint, reinit_non_persistent_buffers
from timm.models.eva import Eva
from torch import Tensor, nn

from dinogeo.errors import BandMismatchError, ConfigError
from dinogeo.models.registry import get_arch_config

__all__ = [
    "DEFAULT_ARCH",
    "Backbone",
    "BatchSubsetDropPath",
    "create_backbone",
    "empty_backbone",
]

DEFAULT_ARCH = "vit_small_patch16_dinov3_qkvb"


class BatchSubsetDropPath(nn.Module):
    """Stochastic depth on a random subset of the batch (DINOv3's ``drop_add_residual``).

    In train mode exactly ``max(int(B * (1 - p)), 1)`` randomly chosen samples keep their residual
    branch, scaled by ``B / kept``; the others' branch is zeroed. timm's ``DropPath`` draws an
    independent Bernoulli per sample instead (a random number of kept samples).

    Args:
        drop_prob: fraction ``p`` of the batch whose branch is dropped.
    """

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = float(drop_prob)

    def forward(self, x: Tensor) -> Tensor:
        """Apply to a residual branch output ``(B, ...)``."""
        if not self.training or self.drop_prob <= 0.0:
            return x
        batch = x.shape[0]
        kept = max(int(batch * (1.0 - self.drop_prob)), 1)
        keep = torch.randperm(batch, device=x.device)[:kept]
        scale = torch.zeros(batch, device=x.device, dtype=x.dtype)
        scale[keep] = batch / kept
        return x * scale.view(batch, *([1] * (x.dim() - 1)))

    def extra_repr(self) -> str:
        """The drop probability, for ``print(model)``."""
        return f"drop_prob={self.drop_prob}"


class Backbone(nn.Module):
    """A DINOv3 ViT (timm ``Eva``) with a mask token and DINOv3-style outputs.

    Build it with :func:`create_backbone`; the constructor wraps an existing timm model.

    Attributes:
        vit: the wrapped timm ``Eva`` model (``num_classes=0``, ``global_pool='token'``).
        arch: the registered architecture name.
        config: the keyword arguments of :func:`create_backbone` that rebuild this backbone.
        embed_dim: token width D.
        patch_size: patch size in pixels.
        num_register_tokens: number of register (storage) tokens R.
        in_chans: number of input bands.
        depth: number of transformer blocks.
        mask_token: learnable (1, D) token for masked patches, initialised to zeros.
        local_cls_norm: the separate norm of local crops' cls and register tokens (7B and SAT
            ViT-L checkpoints), or ``None``; see :meth:`add_local_cls_norm`.
    """

    def __init__(self, vit: Eva, *, arch: str, config: dict[str, Any]) -> None:
        super().__init__()
        if vit.cls_token is None or vit.rope is None:
            raise ConfigError(
                f"backbone {arch!r}: the timm model has no class token or no RoPE; "
                "dinogeo needs a DINOv3 ViT (see dinogeo.models.registry.list_archs())"
            )
        self.vit = vit
        self.arch = arch
        self.config = dict(config)
        self.embed_dim = int(vit.embed_dim)
        patch = vit.patch_embed.patch_size
        self.patch_size = int(patch[0] if isinstance(patch, tuple | list) else patch)
        self.num_register_tokens = int(vit.reg_token.shape[1]) if vit.reg_token is not None else 0
        self.in_chans = int(vit.patch_embed.proj.in_channels)
        self.depth = len(vit.blocks)
        self.mask_token = nn.Parameter(torch.zeros(1, self.embed_dim))
        rescale = self.config.get("rope_rescale_coords")
        self._rope_augmented = rescale not in (None, 1.0)
        self.local_cls_norm: nn.Module | None = None
        if self.config.get("local_cls_norm"):
            self.add_local_cls_norm()

    def add_local_cls_norm(self) -> None:
        """Add the untied norm of local crops' cls and register tokens.

        Meta's ``untie_global_and_local_cls_norm``; initialised as a copy of the final norm.
        Recorded in :attr:`config` (``local_cls_norm: True``) so that a saved backbone is
        rebuilt with it. Does nothing if the backbone already has one.
        """
        if self.local_cls_norm is None:
            self.local_cls_norm = copy.deepcopy(self.vit.norm)
            self.config["local_cls_norm"] = True

    @property
    def blocks(self) -> nn.ModuleList:
        """The transformer blocks of the wrapped timm model."""
        blocks: nn.ModuleList = self.vit.blocks
        return blocks

    @property
    def num_prefix_tokens(self) -> int:
        """Number of tokens before the patch tokens (1 cls + R registers)."""
        return 1 + self.num_register_tokens

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Turn activation (gradient) checkpointing of every block on or off."""
        self.vit.set_grad_checkpointing(enable)

    @property
    def grad_checkpointing(self) -> bool:
        """Whether activation checkpointing is on."""
        return bool(self.vit.grad_checkpointing)

    def no_weight_decay(self) -> set[str]:
        """Parameter names that take no weight decay (tokens), as in timm."""
        return {"mask_token"} | {f"vit.{name}" for name in self.vit.no_weight_decay()}

    def freeze(self, trainable_last_blocks: int = 0) -> None:
        """Freeze the backbone, optionally leaving the last blocks (and final norm) trainable.

        Args:
            trainable_last_blocks: number of final transformer blocks to keep trainable
                (0 freezes everything).

        Raises:
            ConfigError: if the number is negative or larger than the depth.
        """
        if not 0 <= trainable_last_blocks <= self.depth:
            raise ConfigError(
                f"trainable_last_blocks={trainable_last_blocks} is out of range: "
                f"use a value between 0 and the depth ({self.depth})"
            )
        self.requires_grad_(False)
        if trainable_last_blocks:
            for block in self.blocks[self.depth - trainable_last_blocks :]:
                block.requires_grad_(True)
            self.vit.norm.requires_grad_(True)

    def _check_input(self, x: Tensor) -> tuple[int, int]:
        if x.ndim != 4:
            raise ConfigError(
                f"backbone input must be a (B, C, H, W) tensor, got shape {tuple(x.shape)}"
            )
        if x.shape[1] != self.in_chans:
            raise BandMismatchError(
                f"backbone {self.arch!r} expects {self.in_chans} bands but the input has "
                f"{x.shape[1]}: select the bands of the weight card, or expand the patch "
                "embedding with dinogeo.models.expand_bands"
            )
        height, width = int(x.shape[2]), int(x.shape[3])
        if height % self.patch_size or width % self.patch_size:
            raise ConfigError(
                f"input size {height}x{width} is not a multiple of the patch size "
                f"{self.patch_size}: crop or pad the image (e.g. to "
                f"{-(-height // self.patch_size) * self.patch_size}x"
                f"{-(-width // self.patch_size) * self.patch_size})"
            )
        return height // self.patch_size, width // self.patch_size

    def forward_features(
        self, x: Tensor, masks: Tensor | None = None, *, local_crops: bool = False
    ) -> dict[str, Tensor]:
        """Run the ViT and return normalised cls, register and patch tokens.

        Args:
            x: images (B, C, H, W), H and W multiples of the patch size.
            masks: optional (B, N) bool, N = (H / patch) * (W / patch) in row-major order;
                True replaces that patch embedding by :attr:`mask_token` before the prefix
                tokens are added and the blocks run (iBOT).
            local_crops: ``x`` holds local crops: in train mode, a backbone with a
                :attr:`local_cls_norm` normalises their cls and register tokens with it (patch
                tokens always go through the final norm), as Meta's training does.

        Returns:
            ``{"x_norm_clstoken": (B, D), "x_norm_regtokens": (B, R, D),
            "x_norm_patchtokens": (B, N, D)}``.

        Raises:
            ConfigError: if the input or mask shape is wrong.
            BandMismatchError: if the number of bands differs from :attr:`in_chans`.
        """
        grid_h, grid_w = self._check_input(x)
        vit = self.vit
        tokens = vit.patch_embed(x)  # (B, h, w, D): dynamic image size keeps NHWC until _pos_embed
        if masks is not None:
            batch = tokens.shape[0]
            if masks.shape != (batch, grid_h * grid_w):
                raise ConfigError(
                    f"masks must have shape (B, N) = ({batch}, {grid_h * grid_w}) for a "
                    f"{grid_h}x{grid_w} patch grid, got {tuple(masks.shape)}"
                )
            mask = masks.to(device=tokens.device, dtype=torch.bool).view(batch, grid_h, grid_w, 1)
            tokens = torch.where(mask, self.mask_token.to(tokens.dtype).view(1, 1, 1, -1), tokens)
        tokens, rope = vit._pos_embed(tokens)
        tokens = vit.norm_pre(tokens)
        # train-time RoPE augmentation is drawn per block, as in Meta's code (timm draws it once)
        redraw = self.training and vit.rope is not None and self._rope_augmented
        for index, block in enumerate(vit.blocks):
            if redraw and index:
                rope = cast(Any, vit.rope).get_embed(shape=(grid_h, grid_w))
            if vit.grad_checkpointing and not torch.jit.is_scripting():
                tokens = checkpoint(block, tokens, rope=rope)
            else:
                tokens = block(tokens, rope=rope)
        prefix = self.num_prefix_tokens
        if local_crops and self.training and self.local_cls_norm is not None:
            tokens = torch.cat(
                [self.local_cls_norm(tokens[:, :prefix]), vit.norm(tokens[:, prefix:])], dim=1
            )
        else:
            tokens = vit.norm(tokens)
        return {
            "x_norm_clstoken": tokens[:, 0],
            "x_norm_regtokens": tokens[:, 1:prefix],
            "x_norm_patchtokens": tokens[:, prefix:],
        }

    def get_intermediate_layers(
        self, x: Tensor, indices: Sequence[int] | int, *, norm: bool = True
    ) -> list[Tensor]:
        """Return patch tokens of several blocks as feature maps.

        Args:
            x: images (B, C, H, W), H and W multiples of the patch size.
            indices: block indices (negative counts from the end), or an int n for the last n.
            norm: apply the final LayerNorm to each output (the DINOv3 convention).

        Returns:
            One (B, D, H / patch, W / patch) tensor per index, in the order given.

        Raises:
            ConfigError: if an index is out of range or the input shape is wrong.
        """
        self._check_input(x)
        if isinstance(indices, int):
            wanted = list(range(self.depth - indices, self.depth))
        else:
            wanted = [i + self.depth if i < 0 else i for i in indices]
        if not wanted or any(not 0 <= i < self.depth for i in wanted):
            raise ConfigError(
                f"layer indices {indices!r} are out of range for a backbone of depth "
                f"{self.depth}: use indices in [0, {self.depth - 1}] or negative ones"
            )
        unique = sorted(set(wanted))
        outputs = self.vit.forward_intermediates(
            x,
            indices=unique,
            norm=norm,
            stop_early=True,
            output_fmt="NCHW",
            intermediates_only=True,
        )
        by_index: dict[int, Tensor] = dict(zip(unique, cast(list[Tensor], outputs), strict=True))
        return [by_index[i] for i in wanted]

    def forward(self, x: Tensor) -> Tensor:
        """Return the normalised cls token (B, D)."""
        return self.forward_features(x)["x_norm_clstoken"]


def create_backbone(
    arch: str = DEFAULT_ARCH,
    in_chans: int = 3,
    *,
    img_size: int = 256,
    drop_path_rate: float = 0.0,
    rope_rescale_coords: float | None = 2.0,
    local_cls_norm: bool = False,
    **timm_overrides: Any,
) -> Backbone:
    """Build a randomly initialised DINOv3 backbone.

    Args:
        arch: a name from :func:`dinogeo.models.registry.list_archs`, e.g.
            ``"vit_small_patch16_dinov3_qkvb"`` or the tiny ``"vit_test_patch16_dinov3"``.
        in_chans: number of input bands.
        img_size: nominal image size (any multiple of the patch size works at run time).
        drop_path_rate: stochastic depth rate, the same at every block (DINOv3 convention).
        rope_rescale_coords: RoPE coordinate rescale factor R (log-uniform in [1/R, R]),
            active in train mode only; None or 1 turns it off. DINOv3 uses 2.
        local_cls_norm: add a separate norm for local crops' cls and register tokens (the 7B
            and SAT ViT-L checkpoints have one).
        **timm_overrides: further keyword arguments for ``timm.create_model`` (e.g.
            ``embed_dim``, ``depth``, ``num_heads`` for a custom small model).

    Returns:
        The :class:`Backbone`.

    Raises:
        ConfigError: for an unknown architecture or invalid values.
    """
    spec = get_arch_config(arch)
    if in_chans < 1:
        raise ConfigError(f"in_chans must be at least 1, got {in_chans}")
    if not 0.0 <= drop_path_rate < 1.0:
        raise ConfigError(f"drop_path_rate must be in [0, 1), got {drop_path_rate}")
    if rope_rescale_coords is not None and rope_rescale_coords < 1.0:
        raise ConfigError(
            f"rope_rescale_coords must be None or >= 1 (a factor), got {rope_rescale_coords}"
        )
    rescale = None if rope_rescale_coords in (None, 1.0) else float(rope_rescale_coords)
    forbidden = {"num_classes", "global_pool", "pretrained", "dynamic_img_size"} & set(
        timm_overrides
    )
    if forbidden:
        raise ConfigError(
            f"create_backbone sets {sorted(forbidden)} itself: remove them from the overrides"
        )
    kwargs: dict[str, Any] = dict(spec["overrides"])
    kwargs.update(timm_overrides)
    vit = timm.create_model(
        spec["timm_name"],
        pretrained=False,
        num_classes=0,
        global_pool="token",
        in_chans=in_chans,
        img_size=img_size,
        dynamic_img_size=True,
        rope_rescale_coords=rescale,
        **kwargs,
    )
    if drop_path_rate > 0:
        for block in cast(nn.ModuleList, vit.blocks):
            block.drop_path1 = BatchSubsetDropPath(drop_path_rate)
            block.drop_path2 = BatchSubsetDropPath(drop_path_rate)
    config = {
        "in_chans": in_chans,
        "img_size": img_size,
        "drop_path_rate": drop_path_rate,
        "rope_rescale_coords": rope_rescale_coords,
        **timm_overrides,
    }
    if local_cls_norm:  # only when set: cards of other backbones keep their config and hash
        config["local_cls_norm"] = True
    return Backbone(cast(Eva, vit), arch=arch, config=config)


def empty_backbone(arch: str = DEFAULT_ARCH, in_chans: int = 3, **kwargs: Any) -> Backbone:
    """Build a backbone with uninitialised parameters, to be filled by a checkpoint.

    Much faster than :func:`create_backbone` for large models (no random initialisation):
    the model is built on the ``meta`` device, given empty CPU storage, and its computed
    buffers (RoPE periods, the zero k bias) are recomputed. Every parameter must then be
    loaded (``load_state_dict(..., strict=True)``).

    Args:
        arch: registered architecture name.
        in_chans: number of input bands.
        **kwargs: further :func:`create_backbone` arguments.
    """
    with torch.device("meta"):
        backbone = create_backbone(arch, in_chans, **kwargs)
    backbone.to_empty(device="cpu")
    reinit_non_persistent_buffers(backbone)
    return backbone
