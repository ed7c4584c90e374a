"""Build the installable QGIS plugin zip: ``make qgis-plugin`` or ``python qgis_plugin/build_zip.py``.

Writes ``dist/dinogeo_processing-<version>.zip`` (version from metadata.txt) holding the
``dinogeo_processing/`` folder, ready for QGIS's Plugins > Manage and Install Plugins >
Install from ZIP. Compiled files and caches are left out.
"""

import argparse
import configparser
import sys
import zipfile
from pathlib import Path

PLUGIN = Path(__file__).resolve().parent / "dinogeo_processing"
SKIP_DIRS = {"__pycache__"}
SKIP_SUFFIXES = {".pyc", ".pyo"}


def plugin_version(plugin: Path = PLUGIN) -> str:
    """The ``version`` of the plugin's metadata.txt."""
    meta = configparser.ConfigParser()
    meta.read(plugin / "metadata.txt", encoding="utf-8")
    return meta["general"]["version"]


def build(out_dir: Path, plugin: Path = PLUGIN) -> Path:
    """Zip the plugin folder into ``out_dir``; return the zip's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{plugin.name}-{plugin_version(plugin)}.zip"
    files = sorted(
        p
        for p in plugin.rglob("*")
        if p.is_file() and not SKIP_DIRS & set(p.parts) and p.suffix not in SKIP_SUFFIXES
    )
    tmp = target.with_suffix(".zip.part")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in files:
            archive.write(path, Path(plugin.name) / path.relative_to(plugin))
    tmp.replace(target)
    return target


def main(argv=None) -> int:
    """Command line: ``build_zip.py [-o DIST]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", default="dist", help="output folder (default dist)")
    args = parser.parse_args(argv)
    print(build(Path(args.output)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
