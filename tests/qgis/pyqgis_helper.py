"""PyQGIS side of the QGIS tests: run with QGIS's own Python (``/usr/bin/python3`` on Debian).

The tests (Python 3.12) call ``python3 pyqgis_helper.py COMMAND ARGS...``; each command prints
one JSON object on stdout:

* ``layers RASTER VECTOR`` - load both as QGIS does and report renderer type, class labels and
  colours, feature count and the fields (what a user sees when the outputs open in QGIS);
* ``write-labels SRC OUT_DIR`` - write the features of SRC with QgsVectorFileWriter as
  GeoPackage, Shapefile, GeoJSON and CSV with a WKT column (the formats QGIS users export);
* ``write-two-layers POLYGONS POINTS OUT.gpkg`` - one GeoPackage with a training and a
  validation layer and their styles saved in it (``layer_styles``), as a QGIS project keeps them;
* ``run ALG JSON_PARAMS`` - run a Processing algorithm in QGIS's Python (provider loaded from
  $QGIS_PLUGINPATH) as the algorithm dialog does with *Open output file after running* ticked,
  with a feedback that records progress and can cancel after N seconds; report the layers
  loaded into the project and their styles;
* ``batch ALG BATCH_JSON`` - batch mode: QGIS's own batch dialog (``BatchAlgorithmDialog``,
  never shown) opens a batch file in the format its *Open* button reads, runs every row with
  its ``runAlgorithm`` (what *Run* does) and the results load into the project;
* ``batch-widgets PROVIDER`` - the batch dialog's widget for each parameter of each algorithm.
"""

from __future__ import annotations

import json
import os
import sys
import time

from qgis.core import (
    QgsApplication,
    QgsCoordinateTransformContext,
    QgsPalettedRasterRenderer,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProject,
    QgsRasterLayer,
    QgsVectorFileWriter,
    QgsVectorLayer,
)

FORMATS = {
    "gpkg": ("GPKG", []),
    "shp": ("ESRI Shapefile", []),
    "geojson": ("GeoJSON", []),
    "csv": ("CSV", ["GEOMETRY=AS_WKT"]),
}


def start() -> QgsApplication:
    """A headless QGIS application with the Processing framework and native algorithms."""
    app = QgsApplication([], True)  # GUI enabled: the batch dialog's widgets (offscreen)
    app.initQgis()
    sys.path.append("/usr/share/qgis/python/plugins")
    from processing.core.Processing import Processing

    Processing.initialize()  # with QGIS's native algorithms
    return app


def layers(raster: str, vector: str) -> dict:
    """Renderer and classes of the outputs as QGIS loads them (default styles applied)."""
    out: dict = {}
    rl = QgsRasterLayer(raster, "prediction")
    out["raster_valid"] = rl.isValid()
    renderer = rl.renderer()
    out["raster_renderer"] = renderer.type() if renderer else None
    if isinstance(renderer, QgsPalettedRasterRenderer):
        out["raster_classes"] = [
            {"value": int(c.value), "label": c.label, "color": c.color.name()}
            for c in renderer.classes()
        ]
    vl = QgsVectorLayer(vector, "polygons", "ogr")
    out["vector_valid"] = vl.isValid()
    out["vector_features"] = vl.featureCount()
    out["vector_fields"] = vl.fields().names()
    vr = vl.renderer()
    out["vector_renderer"] = vr.type() if vr else None
    if vr is not None and vr.type() == "categorizedSymbol":
        out["vector_categories"] = [c.label() for c in vr.categories()]
    return out


def write_labels(src: str, out_dir: str) -> dict:
    """Write SRC's features in each format QGIS users export; return the paths."""
    layer = QgsVectorLayer(src, "labels", "ogr")
    if not layer.isValid():
        raise SystemExit(f"cannot open {src}")
    paths = {}
    for ext, (driver, layer_options) in FORMATS.items():
        path = os.path.join(out_dir, f"labels.{ext}")
        options = QgsVectorFileWriter.SaveVectorOptions()
        options.driverName = driver
        options.layerName = "training"
        options.layerOptions = layer_options
        error = QgsVectorFileWriter.writeAsVectorFormatV3(
            layer, path, QgsCoordinateTransformContext(), options
        )
        if error[0] != QgsVectorFileWriter.NoError:
            raise SystemExit(f"{driver}: {error}")
        paths[ext] = path
    return paths


def write_two_layers(polygons: str, points: str, out: str) -> dict:
    """One GeoPackage with a 'training' and a 'validation' layer, each style saved in it."""
    for name, src in (("training", polygons), ("validation", points)):
        layer = QgsVectorLayer(src, name, "ogr")
        options = QgsVectorFileWriter.SaveVectorOptions()
        options.driverName = "GPKG"
        options.layerName = name
        if os.path.exists(out):
            options.actionOnExistingFile = QgsVectorFileWriter.CreateOrOverwriteLayer
        error = QgsVectorFileWriter.writeAsVectorFormatV3(
            layer, out, QgsCoordinateTransformContext(), options
        )
        if error[0] != QgsVectorFileWriter.NoError:
            raise SystemExit(f"{name}: {error}")
        saved = QgsVectorLayer(f"{out}|layername={name}", name, "ogr")
        saved.saveStyleToDatabase(name, "default style", True, "")  # -> layer_styles table
    return {"training": f"{out}|layername=training", "validation": f"{out}|layername=validation"}


class RecordingFeedback(QgsProcessingFeedback):
    """Records progress values and texts; cancels ``cancel_after`` s after the first text."""

    def __init__(self, cancel_after: float | None = None) -> None:
        super().__init__()
        self.progress: list[float] = []
        self.texts: list[str] = []
        self.log: list[str] = []
        self.start: float | None = None
        self.cancel_after = cancel_after
        self.progressChanged.connect(self.progress.append)

    def setProgressText(self, text: str) -> None:  # noqa: N802 - QGIS API
        self.texts.append(text)
        if self.start is None and text.startswith("fit step"):
            self.start = time.monotonic()

    def pushConsoleInfo(self, info: str) -> None:  # noqa: N802 - QGIS API
        self.log.append(info)

    def isCanceled(self) -> bool:  # noqa: N802 - QGIS API
        late = self.start is not None and time.monotonic() - self.start > (self.cancel_after or 0)
        if self.cancel_after is not None and late:
            self.cancel()
        return super().isCanceled()


def load_plugin() -> object:
    """Register the dinogeo provider (the plugin loaded from $QGIS_PLUGINPATH).

    The caller keeps the returned plugin referenced: it owns the provider.
    """
    sys.path.insert(0, os.environ["QGIS_PLUGINPATH"])
    from dinogeo_processing.plugin import DinogeoPlugin

    plugin = DinogeoPlugin()
    plugin.initProcessing()
    return plugin


def project_layers() -> dict:
    """The layers of the project by source file: renderer type and its classes, as drawn."""
    out = {}
    for layer in QgsProject.instance().mapLayers().values():
        renderer = layer.renderer()
        seen: dict = {"name": layer.name(), "renderer": renderer.type() if renderer else None}
        if isinstance(renderer, QgsPalettedRasterRenderer):
            seen["classes"] = [c.label for c in renderer.classes()]
        elif seen["renderer"] == "categorizedSymbol":
            seen["classes"] = [c.label() for c in renderer.categories()]
        out[layer.source().split("|")[0]] = seen
    return out


def run(algorithm: str, params_json: str, cancel_after: str = "") -> dict:
    """Run a Processing algorithm as its dialog does; report what loads into the project."""
    import processing
    from processing.gui.Postprocessing import handleAlgorithmResults
    from qgis.core import QgsProcessingException, QgsProcessingOutputLayerDefinition

    plugin = load_plugin()  # noqa: F841 - owns the provider
    alg = QgsApplication.processingRegistry().algorithmById(algorithm)
    params = json.loads(params_json)
    for out in alg.destinationParameterDefinitions():  # "Open output file after running"
        if out.name() in params and out.type() in ("rasterDestination", "vectorDestination"):
            params[out.name()] = QgsProcessingOutputLayerDefinition(
                params[out.name()], QgsProject.instance()
            )
    feedback = RecordingFeedback(float(cancel_after) if cancel_after else None)
    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    started = time.monotonic()
    try:
        results = processing.run(algorithm, params, context=context, feedback=feedback)
        error = None
    except QgsProcessingException as err:
        results, error = {}, str(err)
    layers_to_load = list(context.layersToLoadOnCompletion().keys())
    if error is None:
        handleAlgorithmResults(alg, context, feedback, False, params)
    return {
        "results": {k: v for k, v in results.items() if isinstance(v, str | int | float | None)},
        "error": error,
        "seconds": time.monotonic() - started,
        "progress": feedback.progress,
        "texts": feedback.texts,
        "log": feedback.log[-20:],
        "layers_to_load": layers_to_load,
        "loaded": project_layers(),
    }


def batch(algorithm: str, batch_file: str) -> dict:
    """Batch mode through QGIS's own batch dialog: open BATCH_FILE, run every row.

    The dialog is built but never shown; only its modal file picker is answered with
    BATCH_FILE (what a user picks after *Open*). Rows run one after the other in this thread,
    each with a fresh context, exactly as the *Run* button runs them.
    """
    from processing.gui import BatchPanel
    from processing.gui.BatchAlgorithmDialog import BatchAlgorithmDialog

    plugin = load_plugin()  # noqa: F841 - owns the provider

    def pick(*args: object, **kwargs: object) -> tuple[str, str]:
        return batch_file, ""

    def refuse(parent: object, title: str, text: str, *args: object) -> None:
        raise SystemExit(f"the batch panel refused {batch_file}: {text}")

    BatchPanel.QFileDialog.getOpenFileName = staticmethod(pick)
    BatchPanel.QMessageBox.critical = staticmethod(refuse)
    alg = QgsApplication.processingRegistry().algorithmById(algorithm)
    dialog = BatchAlgorithmDialog(alg)
    panel = dialog.mainWidget()
    panel.load()  # the batch panel's Open button
    rows = []
    for row in range(panel.batchRowCount()):
        params, ok = panel.parametersForRow(row, warnOnInvalid=False)
        rows.append(
            {k: str(v.sink.staticValue() if hasattr(v, "sink") else v) for k, v in params.items()}
            if ok
            else None
        )
    panel.checkLoadLayersOnCompletion.setChecked(True)
    started = time.monotonic()
    dialog.runAlgorithm()  # the Run button
    log_file = batch_file + ".log"
    dialog.saveLogToFile(log_file, dialog.FormatPlainText)
    with open(log_file, encoding="utf-8") as handle:
        log = handle.read()
    return {
        "rows": rows,
        "seconds": time.monotonic() - started,
        "loaded": project_layers(),
        "log": log[-4000:],
    }


def batch_widgets(provider: str) -> dict:
    """For every algorithm of PROVIDER, the batch dialog's cell for each parameter of a row.

    A parameter without a batch widget cannot be set in batch mode; a destination gets a
    ``BatchOutputSelectionPanel`` (output file per row) unless hidden.
    """
    from processing.gui.BatchAlgorithmDialog import BatchAlgorithmDialog

    plugin = load_plugin()  # noqa: F841 - owns the provider
    out: dict = {}
    for alg in QgsApplication.processingRegistry().providerById(provider).algorithms():
        dialog = BatchAlgorithmDialog(alg.create())
        panel = dialog.mainWidget()
        cells = {}
        for param in alg.parameterDefinitions():
            column = panel.parameter_to_column.get(param.name())
            if column is None:
                cells[param.name()] = None
            elif param.isDestination():
                widget = panel.tblParameters.cellWidget(1, column)
                cells[param.name()] = type(widget).__name__ if widget else None
            else:
                wrapper = panel.wrappers[0][column]
                cells[param.name()] = type(wrapper.wrappedWidget()).__name__ if wrapper else None
        out[alg.id()] = cells
    return out


def main() -> None:
    """Dispatch a command and print its JSON answer."""
    app = start()
    command, args = sys.argv[1], sys.argv[2:]
    handler = {
        "layers": layers,
        "write-labels": write_labels,
        "write-two-layers": write_two_layers,
        "run": run,
        "batch": batch,
        "batch-widgets": batch_widgets,
    }[command]
    print(json.dumps(handler(*args)), flush=True)
    if command.startswith("batch"):  # exitQgis() hangs after a batch dialog existed (QGIS 3.22)
        os._exit(0)
    app.exitQgis()


if __name__ == "__main__":
    main()
