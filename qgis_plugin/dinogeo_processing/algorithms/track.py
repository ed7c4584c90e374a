"""dinogeo track: a dated image series -> forest-loss alerts (loss date, confidence, polygons)."""

import os

from qgis.core import (
    QgsProcessing,
    QgsProcessingException,
    QgsProcessingOutputFile,
    QgsProcessingOutputNumber,
    QgsProcessingOutputRasterLayer,
    QgsProcessingOutputVectorLayer,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterFile,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsVectorLayer,
)

from .base import DinogeoAlgorithm, layer_file

#: rasters the command writes into its output folder, by output name
PRODUCTS = {
    "LOSS_DATE": "loss_date.tif",
    "CONFIDENCE": "confidence.tif",
    "MAGNITUDE": "magnitude.tif",
    "ALERTS": "alerts.gpkg",
    "LOSS_BY_PERIOD": "loss_by_period.csv",
    "ACCURACY": "accuracy.csv",
}


class TrackAlgorithm(DinogeoAlgorithm):
    """Alerts where a time series departs from its history (GLAD/RADD-style products)."""

    NAME = "track"
    DISPLAY = "Track forest loss through an image time series"

    def initAlgorithm(self, config=None):
        self.addParameter(
            QgsProcessingParameterMultipleLayers(
                "INPUT",
                self.tr("Image series (one raster per date, or one multi-band stack)"),
                QgsProcessing.TypeRaster,
            )
        )
        self.addParameter(
            QgsProcessingParameterFile(
                "DATES_CSV",
                self.tr("Dates (CSV: file,date or date,band_...; default: from file names)"),
                extension="csv",
                optional=True,
            )
        )
        self.addParameter(
            QgsProcessingParameterString(
                "MONITOR_START", self.tr("Monitoring starts (YYYY-MM-DD; earlier = history)")
            )
        )
        self.addParameter(
            QgsProcessingParameterFeatureSource(
                "REFERENCE",
                self.tr("Dated reference points (calibration and accuracy)"),
                [QgsProcessing.TypeVectorPoint],
                optional=True,
            )
        )
        self.addParameter(
            QgsProcessingParameterRasterLayer(
                "MASK", self.tr("Forest mask (monitor only its non-zero pixels)"), optional=True
            )
        )
        self.addParameter(
            QgsProcessingParameterNumber(
                "MMU_HA",
                self.tr("Minimum mapping unit (ha)"),
                type=QgsProcessingParameterNumber.Double,
                defaultValue=0.0,
                minValue=0.0,
            )
        )
        self.addParameter(
            QgsProcessingParameterString(
                "SENSOR", self.tr("Sensor (default: inferred from the band names)"), optional=True
            )
        )
        self.addParameter(
            QgsProcessingParameterFolderDestination("OUTPUT", self.tr("Output folder"))
        )
        self.addOutput(QgsProcessingOutputRasterLayer("LOSS_DATE", self.tr("Loss date")))
        self.addOutput(QgsProcessingOutputRasterLayer("CONFIDENCE", self.tr("Confidence")))
        self.addOutput(QgsProcessingOutputRasterLayer("MAGNITUDE", self.tr("Magnitude")))
        self.addOutput(QgsProcessingOutputVectorLayer("ALERTS", self.tr("Alert polygons")))
        self.addOutput(QgsProcessingOutputFile("LOSS_BY_PERIOD", self.tr("Loss by period")))
        self.addOutput(
            QgsProcessingOutputFile("ACCURACY", self.tr("Accuracy table (with reference points)"))
        )
        self.addOutput(QgsProcessingOutputNumber("ALERT_COUNT", self.tr("Number of alerts")))

    def processAlgorithm(self, parameters, context, feedback):
        layers = self.parameterAsLayerList(parameters, "INPUT", context)
        if not layers:
            raise QgsProcessingException("give the image series: one raster per date or a stack")
        sources = [layer_file(layer) for layer in layers]
        output = self.parameterAsFileOutput(parameters, "OUTPUT", context)
        args = ["track", *sources, "-o", output, "--overwrite"]
        args += ["--monitor_start", self.parameterAsString(parameters, "MONITOR_START", context)]
        dates = self.parameterAsFile(parameters, "DATES_CSV", context)
        if dates:
            args += ["--dates_csv", dates]
        if parameters.get("REFERENCE"):
            args += ["--reference", self.vector_path(parameters, "REFERENCE", context, feedback)[0]]
        if parameters.get("MASK"):
            args += ["--mask", self.raster_path(parameters, "MASK", context)]
        args += ["--mmu_ha", self.parameterAsDouble(parameters, "MMU_HA", context)]
        sensor = self.parameterAsString(parameters, "SENSOR", context).strip()
        if sensor:
            args += ["--sensor", sensor]
        self.run_command(args, feedback)
        results = {"OUTPUT": output}
        for key, name in PRODUCTS.items():
            path = os.path.join(output, name)
            results[key] = path if os.path.exists(path) else None
        if results["ALERTS"]:
            results["ALERT_COUNT"] = QgsVectorLayer(
                results["ALERTS"], "alerts", "ogr"
            ).featureCount()
        for key in ("LOSS_DATE", "CONFIDENCE", "ALERTS"):
            if results[key]:
                self.load_on_completion(context, results[key], key.lower().replace("_", " "), key)
        return results
