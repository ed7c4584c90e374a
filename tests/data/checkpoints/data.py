"""Generate fake DINOv3 checkpoints in Meta's key layout (spec section 1).

Official ``.pth`` files are flat backbone state dicts::

    cls_token (1, 1, D)            storage_tokens (1, R, D)      mask_token (1, D)
    patch_embed.proj.weight (D, 3, 16, 16) / .bias (D)
    rope_embed.periods (D_head / 4)                              norm.weight / norm.bias (D)
    blocks.i.norm1.* / norm2.* (D)
    blocks.i.attn.qkv.weight (3D, D) / .bias (3D) / .bias_mask (3D: 1 for q and v, 0 for k)
    blocks.i.attn.proj.weight (D, D) / .bias (D)
    blocks.i.ls1.gamma / ls2.gamma (D)
    blocks.i.mlp.fc1.weight (4D, D) / .bias, blocks.i.mlp.fc2.weight (D, 4D) / .bias
    local_cls_norm.* (7B and SAT ViT-L only)

Training checkpoints hold the same keys as ``{"teacher": {"backbone.<key>": ...,
"dino_head.*": ..., "ibot_head.*": ...}}``. Values are random (seeded) but of realistic scale;
the k third of the qkv bias is non-zero on purpose, as Meta masks it with ``bias_mask``.

Run ``python tests/data/checkpoints/data.py OUT_DIR`` to write examples by hand; tests call
:func:`write_meta_checkpoint` into ``tmp_path``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

# width, depth, heads of the architectures the tests use
ARCH_SHAPES = {
    "vit_test_patch16_dinov3": (64, 4, 2),
    "vit_small_patch16_dinov3_qkvb": (384, 12, 6),
}


def meta_state_dict(
    embed_dim: int,
    depth: int,
    num_heads: int,
    *,
    num_storage: int = 4,
    patch_size: int = 16,
    in_chans: int = 3,
    mlp_ratio: int = 4,
    local_cls_norm: bool = False,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """Return a random backbone state dict with Meta's DINOv3 keys and shapes."""
    gen = torch.Generator().manual_seed(seed)
    d, hidden = embed_dim, mlp_ratio * embed_dim
    head_dim = d // num_heads

    def randn(*shape: int, std: float = 0.02) -> torch.Tensor:
        return torch.randn(*shape, generator=gen) * std

    def norm_pair(prefix: str) -> dict[str, torch.Tensor]:
        return {f"{prefix}.weight": 1.0 + randn(d, std=0.1), f"{prefix}.bias": randn(d, std=0.1)}

    periods = 100.0 ** (2 * torch.arange(head_dim // 4, dtype=torch.float32) / (head_dim // 2))
    state: dict[str, torch.Tensor] = {
        "cls_token": randn(1, 1, d, std=0.5),
        "storage_tokens": randn(1, num_storage, d, std=0.5),
        "mask_token": randn(1, d, std=0.5),
        "patch_embed.proj.weight": randn(d, in_chans, patch_size, patch_size, std=0.05),
        "patch_embed.proj.bias": randn(d, std=0.1),
        # Meta keeps the periods as a buffer (bfloat16 in the released files)
        "rope_embed.periods": periods.to(torch.bfloat16),
        **norm_pair("norm"),
    }
    for i in range(depth):
        p = f"blocks.{i}."
        bias_mask = torch.ones(3 * d)
        bias_mask[d : 2 * d] = 0
        state.update(
            {
                **norm_pair(p + "norm1"),
                **norm_pair(p + "norm2"),
                p + "attn.qkv.weight": randn(3 * d, d, std=d**-0.5),
                p + "attn.qkv.bias": randn(3 * d, std=0.2),
                p + "attn.qkv.bias_mask": bias_mask,
                p + "attn.proj.weight": randn(d, d, std=d**-0.5),
                p + "attn.proj.bias": randn(d, std=0.05),
                p + "ls1.gamma": 0.2 + randn(d, std=0.05),
                p + "ls2.gamma": 0.2 + randn(d, std=0.05),
                p + "mlp.fc1.weight": randn(hidden, d, std=d**-0.5),
                p + "mlp.fc1.bias": randn(hidden, std=0.05),
                p + "mlp.fc2.weight": randn(d, hidden, std=hidden**-0.5),
                p + "mlp.fc2.bias": randn(d, std=0.05),
            }
        )
    if local_cls_norm:
        state.update(norm_pair("local_cls_norm"))
    return state


def write_meta_checkpoint(
    path: Path,
    arch: str = "vit_test_patch16_dinov3",
    *,
    training_format: bool = False,
    local_cls_norm: bool = False,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """Write a fake official checkpoint for a registered test arch; return its flat state dict.

    Args:
        path: output ``.pth`` file.
        arch: a key of :data:`ARCH_SHAPES`.
        training_format: write ``{"teacher": {"backbone.*", "dino_head.*", "ibot_head.*"}}``.
        local_cls_norm: add the SAT ViT-L / 7B ``local_cls_norm`` keys.
        seed: random seed.
    """
    width, depth, heads = ARCH_SHAPES[arch]
    state = meta_state_dict(width, depth, heads, local_cls_norm=local_cls_norm, seed=seed)
    if training_format:
        teacher = {f"backbone.{k}": v for k, v in state.items()}
        teacher["dino_head.mlp.0.weight"] = torch.zeros(8, width)
        teacher["ibot_head.mlp.0.weight"] = torch.zeros(8, width)
        torch.save({"teacher": teacher}, path)
    else:
        torch.save(state, path)
    return state


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    out.mkdir(parents=True, exist_ok=True)
    for name in ARCH_SHAPES:
        write_meta_checkpoint(out / f"{name}_meta.pth", name)
        print(out / f"{name}_meta.pth")
