"""``dinogeo export``: a model bundle as ONNX for the QGIS Deepness plugin (:func:`export_onnx`).

Usage::

    dinogeo export BUNDLE --onnx -o MODEL.onnx [--tile 512] [--overlap 64]
        [--check_image SCENE.tif] [--resolution_cm 1000] [--overwrite]
"""

from __future__ import annotations

from typing import Any

from dinogeo.errors import ConfigError

__all__ = ["run"]


def run(options: dict[str, Any], *, onnx: bool = True) -> int:
    """Export the bundle and print what was written and how closely onnxruntime matches torch.

    Args:
        options: the keyword arguments of :func:`~dinogeo.models.onnx_export.export_onnx`.
        onnx: write ONNX (the one export format; ``--onnx`` says so explicitly).

    Returns:
        The exit status (0 on success).
    """
    from dinogeo.models.onnx_export import export_onnx

    if not onnx:
        raise ConfigError("ONNX is the only export format: pass --onnx (or drop --no-onnx)")
    result = export_onnx(**options)
    keys = ", ".join(sorted(result.metadata))
    print(
        f"dinogeo export: {result.path} (opset {result.opset}, input (N, C, {result.tile}, "
        f"{result.tile}), N dynamic); onnxruntime vs torch max abs diff "
        f"{result.max_abs_diff:.3g}\n  metadata: {keys}"
    )
    return 0
