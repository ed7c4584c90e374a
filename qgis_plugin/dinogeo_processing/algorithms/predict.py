"""dinogeo predict: a raster layer through a model bundle into a styled COG (+ GeoPackage)."""

import os

from qgis.core import (
    QgsProcessingOutputVectorLayer,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterFile,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
)

from .base import DinogeoAlgorithm


class PredictAlgorithm(DinogeoAlgorithm):
    """Map a raster with a model bundle: class COG with palette + .qml, polygons in a GeoPackage."""

    NAME = "predict"
    DISPLAY = "Predict (land cover, canopy height) with a model bundle"

    def initAlgorithm(self, config=None):
        self.addParameter(QgsProcessingParameterRasterLayer("INPUT", self.tr("Input raster")))
        self.addParameter(
            QgsProcessingParameterFile(
                "MODEL",
                self.tr("Model bundle (.safetensors from dinogeo fit)"),
                extension="safetensors",
            )
        )
        self.addParameter(
            QgsProcessingParameterBoolean(
                "VECTORIZE", self.tr("Also write class polygons (GeoPackage)"), defaultValue=True
            )
        )
        self.add_int("TILE", "Window side (pixels)", 512, minimum=16)
        self.add_int("OVERLAP", "Window overlap (pixels, blended)", 64, minimum=0)
        self.add_int("BATCH_SIZE", "Windows per model call", 8)
        self.add_device()
        self.addParameter(QgsProcessingParameterRasterDestination("OUTPUT", self.tr("Prediction")))
        self.addOutput(QgsProcessingOutputVectorLayer("OUTPUT_POLYGONS", self.tr("Class polygons")))

    def processAlgorithm(self, parameters, context, feedback):
        source = self.raster_path(parameters, "INPUT", context)
        model = self.parameterAsFile(parameters, "MODEL", context)
        output = self.parameterAsOutputLayer(parameters, "OUTPUT", context)
        os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
        vectorize = self.parameterAsBoolean(parameters, "VECTORIZE", context)
        tile = self.parameterAsInt(parameters, "TILE", context)
        args = ["predict", "--model", model, source, "-o", output, "--overwrite"]
        args += ["--tile", tile, "--overlap", self.parameterAsInt(parameters, "OVERLAP", context)]
        args += ["--batch_size", self.parameterAsInt(parameters, "BATCH_SIZE", context)]
        args += ["--device", self.device(parameters, context)]
        if not vectorize:
            args += ["--vectorize", "false"]
        self.run_command(args, feedback)
        self.style_on_completion(context, output)
        results = {"OUTPUT": output, "OUTPUT_POLYGONS": None}
        polygons = os.path.splitext(output)[0] + ".gpkg"
        if vectorize and os.path.exists(polygons):
            results["OUTPUT_POLYGONS"] = polygons
            name = os.path.splitext(os.path.basename(output))[0] + " polygons"
            self.load_on_completion(context, polygons, name, "OUTPUT_POLYGONS", follows=output)
        return results
