"""dinogeo embed: dense backbone features of a raster (GeoTIFF) and their PCA picture."""

import os

from qgis.core import (
    QgsProcessingOutputRasterLayer,
    QgsProcessingParameterFile,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
)

from .base import DinogeoAlgorithm


class EmbedAlgorithm(DinogeoAlgorithm):
    """Features at 1/patch resolution + a PCA-to-RGB picture to judge a backbone."""

    NAME = "embed"
    DISPLAY = "Backbone features and PCA picture"

    def initAlgorithm(self, config=None):
        self.addParameter(QgsProcessingParameterRasterLayer("INPUT", self.tr("Input raster")))
        self.addParameter(
            QgsProcessingParameterFile(
                "BACKBONE", self.tr("Backbone (.safetensors)"), extension="safetensors"
            )
        )
        self.add_int("LAYER", "Backbone block (-1: last)", -1, minimum=-64)
        self.add_int("TILE", "Window side (pixels)", 512, minimum=16)
        self.add_int("OVERLAP", "Window overlap (pixels, blended)", 64, minimum=0)
        self.add_device()
        self.addParameter(
            QgsProcessingParameterRasterDestination("OUTPUT", self.tr("Features (GeoTIFF)"))
        )
        self.addOutput(QgsProcessingOutputRasterLayer("OUTPUT_PCA", self.tr("PCA picture")))

    def processAlgorithm(self, parameters, context, feedback):
        source = self.raster_path(parameters, "INPUT", context)
        output = self.parameterAsOutputLayer(parameters, "OUTPUT", context)
        os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
        args = [
            "embed",
            source,
            "--backbone",
            self.parameterAsFile(parameters, "BACKBONE", context),
        ]
        args += [
            "-o",
            output,
            "--overwrite",
            "--layer",
            self.parameterAsInt(parameters, "LAYER", context),
        ]
        args += ["--tile", self.parameterAsInt(parameters, "TILE", context)]
        args += ["--overlap", self.parameterAsInt(parameters, "OVERLAP", context)]
        args += ["--device", self.device(parameters, context)]
        self.run_command(args, feedback)
        self.style_on_completion(context, output)
        pca = os.path.splitext(output)[0] + "_pca.tif"
        results = {"OUTPUT": output, "OUTPUT_PCA": pca if os.path.exists(pca) else None}
        if results["OUTPUT_PCA"]:
            name = os.path.splitext(os.path.basename(output))[0] + " PCA"
            self.load_on_completion(context, pca, name, "OUTPUT_PCA", follows=output)
        return results
