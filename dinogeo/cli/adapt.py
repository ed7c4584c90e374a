"""``dinogeo adapt BACKBONE --sensor S -o OUT``: carry a backbone over to another sensor's bands."""

from __future__ import annotations

import argparse

from dinogeo.models.adapt import adapt_backbone_file

__all__ = ["main"]


def main(argv: list[str]) -> int:
    """Adapt a backbone file to a sensor (band mapping by name/alias) and save it with its card.

    Args:
        argv: command-line arguments after ``adapt``.

    Returns:
        The exit status (0 on success).
    """
    parser = argparse.ArgumentParser(
        prog="dinogeo adapt",
        description="Adapt a backbone to another sensor: matching bands keep their filters, "
        "others start from the mean filter; the weight card follows the new sensor.",
    )
    parser.add_argument("backbone", help="dinogeo backbone file (.safetensors)")
    parser.add_argument("--sensor", required=True, help="target sensor name or YAML path")
    parser.add_argument("--bands", nargs="+", default=None, help="target bands, in order")
    parser.add_argument("-o", "--output", required=True, help="output backbone file")
    args = parser.parse_args(argv)
    card = adapt_backbone_file(args.backbone, args.sensor, args.output, bands=args.bands)
    band_map = card.training_config["adapted_from"]["band_map"]
    print(f"wrote {args.output}: {card.arch}, sensor {card.sensor}, bands {card.band_names}")
    for new, old in band_map.items():
        print(f"  {new:<8} <- {old}")
    return 0
