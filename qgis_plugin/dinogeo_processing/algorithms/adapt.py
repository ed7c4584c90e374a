"""dinogeo adapt: carry a backbone over to another sensor's bands."""

import os

from qgis.core import (
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterString,
)

from .base import DinogeoAlgorithm


class AdaptAlgorithm(DinogeoAlgorithm):
    """Bands matching by name or alias keep their filters; the weight card follows the sensor."""

    NAME = "adapt"
    DISPLAY = "Adapt a backbone to another sensor"

    def initAlgorithm(self, config=None):
        self.addParameter(
            QgsProcessingParameterFile(
                "BACKBONE", self.tr("Backbone (.safetensors)"), extension="safetensors"
            )
        )
        self.addParameter(
            QgsProcessingParameterString(
                "SENSOR",
                self.tr("Target sensor (name, e.g. landsat7_etm, sentinel2_l2a, or a YAML path)"),
            )
        )
        self.addParameter(
            QgsProcessingParameterString(
                "BANDS",
                self.tr("Target bands in file order, space separated (default: all)"),
                optional=True,
            )
        )
        self.addParameter(
            QgsProcessingParameterFileDestination(
                "OUTPUT", self.tr("Adapted backbone"), fileFilter="Backbone (*.safetensors)"
            )
        )

    def processAlgorithm(self, parameters, context, feedback):
        output = self.parameterAsFileOutput(parameters, "OUTPUT", context)
        os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
        if not output.lower().endswith(".safetensors"):
            output += ".safetensors"
        args = ["adapt", self.parameterAsFile(parameters, "BACKBONE", context)]
        args += ["--sensor", self.parameterAsString(parameters, "SENSOR", context).strip()]
        bands = self.parameterAsString(parameters, "BANDS", context).split()
        if bands:
            args += ["--bands", *bands]
        self.run_command(args + ["-o", output], feedback)
        return {"OUTPUT": output}
