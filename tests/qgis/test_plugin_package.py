"""The plugin as shipped: a zip QGIS can install, pure PyQGIS (no torch, no dinogeo)."""

import ast
import configparser
import zipfile

from qgis_plugin.build_zip import PLUGIN, build, plugin_version

#: what plugin code may import: QGIS, Qt through QGIS, Processing, the standard library
ALLOWED_ROOTS = {"qgis", "processing"}


def _imports(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            yield node.module.split(".")[0]


def test_plugin_imports_only_pyqgis_and_the_standard_library():
    import sys

    for path in PLUGIN.rglob("*.py"):
        for root in _imports(path):
            assert root in ALLOWED_ROOTS or root in sys.stdlib_module_names, (path, root)


def test_zip_holds_the_plugin_with_metadata_icon_help_and_model(tmp_path):
    target = build(tmp_path)
    assert target.name == f"dinogeo_processing-{plugin_version()}.zip"
    with zipfile.ZipFile(target) as archive:
        names = set(archive.namelist())
        meta = configparser.ConfigParser()
        meta.read_string(archive.read("dinogeo_processing/metadata.txt").decode())
    general = meta["general"]
    for key in ("name", "qgisMinimumVersion", "description", "about", "version", "author",
                "email", "repository", "icon"):  # fmt: skip
        assert general.get(key), key
    assert general["hasProcessingProvider"] == "yes"
    assert f"dinogeo_processing/{general['icon']}" in names
    for alg in ("predict", "embed", "fit", "validate", "track", "adapt"):
        assert f"dinogeo_processing/help/{alg}.html" in names
        assert f"dinogeo_processing/algorithms/{alg}.py" in names
    assert "dinogeo_processing/models/landcover_per_zone.model3" in names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
