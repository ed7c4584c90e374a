"""``dinogeo embed``: dense backbone features of a raster into zarr/GeoTIFF, plus a PCA picture.

Usage::

    dinogeo embed --backbone backbone.safetensors scene.tif -o scene_features.zarr
    dinogeo embed --backbone backbone.safetensors scene.tif -o scene_features.tif --layer 6

Writes the features and ``<stem>_pca.tif`` / ``<stem>_pca.png`` (3 PCA components as RGB). A thin
wrapper over :func:`dinogeo.inference.embed.embed_raster`.
"""

from __future__ import annotations

import argparse

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of ``dinogeo embed``."""
    p = argparse.ArgumentParser(
        prog="dinogeo embed",
        description="Stream a raster through a backbone into dense patch features (zarr or "
        "GeoTIFF at 1/patch resolution) and a PCA-to-RGB picture (GeoTIFF + PNG).",
    )
    p.add_argument("input", help="raster file, VRT or zarr store")
    p.add_argument(
        "--backbone", required=True, help="backbone weights (.safetensors or checkpoint)"
    )
    p.add_argument("-o", "--output", required=True, help="output .zarr store or .tif")
    p.add_argument("--layer", type=int, default=-1, help="backbone block to export (default -1)")
    p.add_argument("--tile", type=int, default=512, help="window side in pixels (default 512)")
    p.add_argument("--overlap", type=int, default=64, help="window overlap in pixels (default 64)")
    p.add_argument("--batch-size", type=int, default=8, help="windows per model call (default 8)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--workers", type=int, default=2, help="background reader threads (default 2)")
    p.add_argument("--no-pca", action="store_true", help="skip the PCA picture")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    return p  # fmt: skip


def main(argv: list[str]) -> int:
    """Run ``dinogeo embed``.

    Args:
        argv: command-line arguments after ``embed``.

    Returns:
        The exit status (0 on success).
    """
    args = build_parser().parse_args(argv)
    from dinogeo.inference.embed import embed_raster

    embed_raster(
        args.backbone,
        args.input,
        args.output,
        layer=args.layer,
        tile=args.tile,
        overlap=args.overlap,
        batch_size=args.batch_size,
        device=args.device,
        workers=args.workers,
        pca=not args.no_pca,
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    return 0
