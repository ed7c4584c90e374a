"""What every dinogeo Processing algorithm shares: names, help, inputs as files, the run."""

import os

from qgis.core import (
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingLayerPostProcessorInterface,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterNumber,
    QgsProcessingUtils,
)
from qgis.PyQt.QtCore import QCoreApplication
from qgis.PyQt.QtGui import QIcon

from ..runner import run_dinogeo

PLUGIN_DIR = os.path.dirname(os.path.dirname(__file__))
HELP_DIR = os.path.join(PLUGIN_DIR, "help")
DEVICES = ["cpu", "cuda"]
#: vector formats dinogeo reads directly; other sources are saved to a GeoPackage first
VECTOR_FORMATS = ["gpkg", "shp", "geojson"]


class DinogeoAlgorithm(QgsProcessingAlgorithm):
    """Base class: subclasses set NAME, DISPLAY and define initAlgorithm/processAlgorithm."""

    NAME = ""
    DISPLAY = ""
    GROUP = "dinogeo"

    def createInstance(self):
        return type(self)()

    def name(self):
        return self.NAME

    def displayName(self):
        return self.tr(self.DISPLAY)

    def group(self):
        return self.tr(self.GROUP)

    def groupId(self):
        return self.GROUP

    def icon(self):
        return QIcon(os.path.join(PLUGIN_DIR, "icon.svg"))

    def shortHelpString(self):
        path = os.path.join(HELP_DIR, f"{self.NAME}.html")
        with open(path, encoding="utf-8") as handle:
            return handle.read()

    def tr(self, text):
        return QCoreApplication.translate("dinogeo", text)

    # parameters used by several algorithms

    def add_device(self):
        """The torch device (advanced)."""
        param = QgsProcessingParameterEnum(
            "DEVICE", self.tr("Device"), options=DEVICES, defaultValue=0
        )
        param.setFlags(param.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
        self.addParameter(param)

    def add_int(self, name, text, default, minimum=1, advanced=True):
        """An integer parameter (advanced by default)."""
        param = QgsProcessingParameterNumber(
            name,
            self.tr(text),
            type=QgsProcessingParameterNumber.Integer,
            defaultValue=default,
            minValue=minimum,
        )
        if advanced:
            param.setFlags(param.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
        self.addParameter(param)

    def device(self, parameters, context):
        return DEVICES[self.parameterAsEnum(parameters, "DEVICE", context)]

    def raster_path(self, parameters, name, context):
        """The file behind a raster layer parameter (dinogeo reads files, not QGIS layers)."""
        layer = self.parameterAsRasterLayer(parameters, name, context)
        if layer is None:
            raise QgsProcessingException(self.invalidRasterError(parameters, name))
        return layer_file(layer)

    def vector_path(self, parameters, name, context, feedback):
        """A file dinogeo can read for a vector parameter, and its layer name.

        Selected features only, filtered layers, memory layers and other formats are written to
        a temporary GeoPackage by QGIS first.
        """
        path, layer = self.parameterAsCompatibleSourceLayerPathAndLayerName(
            parameters, name, context, VECTOR_FORMATS, "gpkg", feedback
        )
        if not path:
            raise QgsProcessingException(self.invalidSourceError(parameters, name))
        return path, layer

    def run_command(self, args, feedback):
        """Run ``dinogeo ARGS`` with progress and cancel wired to ``feedback``."""
        return run_dinogeo(args, feedback)

    def load_on_completion(self, context, path, name, output, follows=None):
        """Load ``path`` into the project, with its default style, when the algorithm ends.

        ``follows``: the path of the layer destination this file belongs to (the predicted
        raster for its polygons); ``path`` is then loaded only when that destination is, so that
        unticking *Open output file* or *Load layers on completion* (batch mode) loads neither.
        """
        if context.project() is None:
            return
        if follows is not None and not context.willLoadLayerOnCompletion(follows):
            return
        details = QgsProcessingContext.LayerDetails(name, context.project(), output)
        details.setPostProcessor(DefaultStyle.create())
        context.addLayerToLoadOnCompletion(path, details)

    def style_on_completion(self, context, path):
        """Give the layer destination ``path`` its default style when QGIS loads it."""
        if context.willLoadLayerOnCompletion(path):
            details = context.layerToLoadOnCompletionDetails(path)
            details.setPostProcessor(DefaultStyle.create())


class DefaultStyle(QgsProcessingLayerPostProcessorInterface):
    """Applies a result layer's default style (``.qml`` beside it, GeoPackage ``layer_styles``).

    Processing loads result layers without their default style, so without this the class
    polygons open with a single symbol and the class raster without its class names.
    """

    #: QGIS calls a post-processor after ``processAlgorithm`` returns: keep each one referenced
    _alive = []

    @classmethod
    def create(cls):
        """A new post-processor, kept alive for QGIS."""
        instance = cls()
        cls._alive.append(instance)
        return instance

    def postProcessLayer(self, layer, context, feedback):
        message, ok = layer.loadDefaultStyle()
        if not ok:
            feedback.pushInfo(f"{layer.name()}: no default style ({message})")
        layer.triggerRepaint()


def layer_file(layer):
    """The file behind a raster layer (dinogeo reads files, not QGIS layers)."""
    path = layer.source().split("|")[0]
    if layer.providerType() != "gdal" or not os.path.exists(path):
        raise QgsProcessingException(
            f"dinogeo reads raster files, and layer '{layer.name()}' is not one "
            f"({layer.providerType()}: {layer.source()}). Fix: save it as a GeoTIFF "
            "(right click > Export > Save As...) and use that file."
        )
    return path


def temporary_path(name):
    """A fresh file path in QGIS's Processing temporary folder."""
    return QgsProcessingUtils.generateTempFilename(name)
