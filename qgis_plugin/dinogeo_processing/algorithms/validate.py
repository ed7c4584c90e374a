"""dinogeo validate: accuracy of a model bundle against reference polygons or points."""

import json
import os

from qgis.core import (
    QgsProcessing,
    QgsProcessingOutputNumber,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterRasterLayer,
)

from .base import DinogeoAlgorithm


class ValidateAlgorithm(DinogeoAlgorithm):
    """Metrics (accuracy, mIoU, per-class IoU/F1) of a bundle on independent reference labels."""

    NAME = "validate"
    DISPLAY = "Validate a model bundle against reference labels"

    def initAlgorithm(self, config=None):
        self.addParameter(
            QgsProcessingParameterFile(
                "MODEL", self.tr("Model bundle (.safetensors)"), extension="safetensors"
            )
        )
        self.addParameter(QgsProcessingParameterRasterLayer("INPUT", self.tr("Image")))
        self.addParameter(
            QgsProcessingParameterFeatureSource(
                "LABELS",
                self.tr("Reference polygons or points"),
                [QgsProcessing.TypeVectorPolygon, QgsProcessing.TypeVectorPoint],
            )
        )
        self.addParameter(
            QgsProcessingParameterField(
                "FIELD", self.tr("Class field"), parentLayerParameterName="LABELS"
            )
        )
        self.add_int("CHIP_SIZE", "Prediction window (pixels)", 256, minimum=16)
        self.addParameter(
            QgsProcessingParameterFileDestination(
                "OUTPUT", self.tr("Metrics (JSON)"), fileFilter="JSON (*.json)"
            )
        )
        self.addOutput(QgsProcessingOutputNumber("ACCURACY", self.tr("Overall accuracy")))
        self.addOutput(QgsProcessingOutputNumber("MIOU", self.tr("Mean IoU")))

    def processAlgorithm(self, parameters, context, feedback):
        labels, layer = self.vector_path(parameters, "LABELS", context, feedback)
        output = self.parameterAsFileOutput(parameters, "OUTPUT", context)
        os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
        args = ["validate", "--model", self.parameterAsFile(parameters, "MODEL", context)]
        args += ["--image", self.raster_path(parameters, "INPUT", context), "--labels", labels]
        args += ["--label_field", self.parameterAsString(parameters, "FIELD", context)]
        if layer:
            args += ["--label_layer", layer]
        args += ["--chip_size", self.parameterAsInt(parameters, "CHIP_SIZE", context)]
        self.run_command(args + ["--json", output], feedback)
        with open(output, encoding="utf-8") as handle:
            metrics = json.load(handle)["metrics"]
        for key in ("accuracy", "miou"):
            if key in metrics:
                feedback.pushInfo(f"{key}: {metrics[key]:.4f}")
        return {"OUTPUT": output, "ACCURACY": metrics.get("accuracy"), "MIOU": metrics.get("miou")}
