"""dinogeo validate: accuracy of a model bundle against reference polygons or points."""

import json
import os

from qgis.core import (
    QgsProcessing,
    QgsProcessingOutputFile,
    QgsProcessingOutputNumber,
    QgsProcessingOutputVectorLayer,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
    QgsProcessingParameterFile,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterRasterLayer,
)

from .base import DinogeoAlgorithm

#: files of the report folder (dinogeo.trainers.validation_report), by output name
REPORT = {
    "METRICS": "metrics.json",
    "ERROR_MATRIX": "error_matrix.csv",
    "CLASS_ACCURACY": "class_accuracy.csv",
    "POINTS": "validation_points.gpkg",
}


class ValidateAlgorithm(DinogeoAlgorithm):
    """Accuracy report of a bundle on reference labels: metrics, error matrix, points layer."""

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
            QgsProcessingParameterFolderDestination("OUTPUT", self.tr("Validation report folder"))
        )
        self.addOutput(QgsProcessingOutputFile("METRICS", self.tr("Metrics (JSON)")))
        self.addOutput(QgsProcessingOutputFile("ERROR_MATRIX", self.tr("Error matrix (CSV)")))
        self.addOutput(
            QgsProcessingOutputFile("CLASS_ACCURACY", self.tr("User's/producer's accuracy (CSV)"))
        )
        self.addOutput(
            QgsProcessingOutputVectorLayer("POINTS", self.tr("Validation points (reference, map)"))
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
        self.run_command(args + ["--report_dir", output, "--overwrite"], feedback)
        results = {"OUTPUT": output}
        for key, name in REPORT.items():
            path = os.path.join(output, name)
            results[key] = path if os.path.exists(path) else None
        with open(results["METRICS"], encoding="utf-8") as handle:
            metrics = json.load(handle)["metrics"]
        for key in ("accuracy", "miou"):
            if key in metrics:
                feedback.pushInfo(f"{key}: {metrics[key]:.4f}")
        results["ACCURACY"], results["MIOU"] = metrics.get("accuracy"), metrics.get("miou")
        for key, name in (
            ("POINTS", "validation points"),
            ("CLASS_ACCURACY", "class accuracy"),
            ("ERROR_MATRIX", "error matrix"),
        ):
            if results[key]:
                self.load_on_completion(context, results[key], name, key)
        return results
