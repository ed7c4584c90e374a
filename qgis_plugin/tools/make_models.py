"""Write the example Processing models shipped with the plugin (run with QGIS's Python).

    QT_QPA_PLATFORM=offscreen python3 qgis_plugin/tools/make_models.py qgis_plugin/dinogeo_processing/models

``landcover_per_zone.model3``: dinogeo predict (image + model bundle -> land-cover COG) feeding
native:zonalstatisticsfb (count, majority and variety of the predicted classes per zone
polygon). Inputs: ``image``, ``model``, ``zones``; output ``zonal:zones_landcover``.
"""

import os
import sys

from qgis.core import (
    QgsApplication,
    QgsProcessing,
    QgsProcessingModelAlgorithm,
    QgsProcessingModelChildAlgorithm,
    QgsProcessingModelChildParameterSource,
    QgsProcessingModelOutput,
    QgsProcessingModelParameter,
    QgsProcessingParameterFile,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterVectorLayer,
)
from qgis.PyQt.QtCore import QPointF

#: native:zonalstatisticsfb STATISTICS codes: 0 count, 9 majority, 10 variety
ZONAL_STATISTICS = [0, 9, 10]


def _input(model, definition, x, y):
    component = QgsProcessingModelParameter(definition.name())
    component.setPosition(QPointF(x, y))
    model.addModelParameter(definition, component)


def landcover_per_zone():
    """dinogeo predict -> zonal statistics of the predicted classes per polygon."""
    model = QgsProcessingModelAlgorithm("Land cover per zone", "dinogeo", "dinogeo_landcover_zones")
    model.setHelpContent(
        {
            "ALG_DESC": "Predicts land cover with a dinogeo model bundle, then counts the "
            "predicted classes in each zone polygon (count, majority class, number of classes).",
            "image": "Raster file with the bands the model was trained on.",
            "model": "Model bundle (.safetensors) from dinogeo fit or the dinogeo Train algorithm.",
            "zones": "Polygons to summarise (fields, parcels, administrative areas).",
        }
    )
    _input(model, QgsProcessingParameterRasterLayer("image", "Image"), 80, 60)
    _input(
        model,
        QgsProcessingParameterFile("model", "Model bundle", extension="safetensors"),
        300,
        60,
    )
    _input(
        model,
        QgsProcessingParameterVectorLayer("zones", "Zones", [QgsProcessing.TypeVectorPolygon]),
        520,
        60,
    )
    source = QgsProcessingModelChildParameterSource
    predict = QgsProcessingModelChildAlgorithm("dinogeo:predict")
    predict.setChildId("predict")
    predict.setDescription("dinogeo predict")
    predict.setPosition(QPointF(200, 200))
    predict.addParameterSources("INPUT", [source.fromModelParameter("image")])
    predict.addParameterSources("MODEL", [source.fromModelParameter("model")])
    predict.addParameterSources("VECTORIZE", [source.fromStaticValue(False)])
    predict.addParameterSources("TILE", [source.fromStaticValue(256)])
    predict.addParameterSources("OVERLAP", [source.fromStaticValue(32)])
    predict.addParameterSources("BATCH_SIZE", [source.fromStaticValue(4)])
    predict.addParameterSources("DEVICE", [source.fromStaticValue(0)])
    model.addChildAlgorithm(predict)

    zonal = QgsProcessingModelChildAlgorithm("native:zonalstatisticsfb")
    zonal.setChildId("zonal")
    zonal.setDescription("Zonal statistics of the predicted classes")
    zonal.setPosition(QPointF(420, 330))
    zonal.addParameterSources("INPUT", [source.fromModelParameter("zones")])
    zonal.addParameterSources("INPUT_RASTER", [source.fromChildOutput("predict", "OUTPUT")])
    zonal.addParameterSources("RASTER_BAND", [source.fromStaticValue(1)])
    zonal.addParameterSources("COLUMN_PREFIX", [source.fromStaticValue("lc_")])
    zonal.addParameterSources("STATISTICS", [source.fromStaticValue(ZONAL_STATISTICS)])
    output = QgsProcessingModelOutput("zones_landcover", "Zones with land cover")
    output.setChildId("zonal")
    output.setChildOutputName("OUTPUT")
    output.setPosition(QPointF(600, 440))
    zonal.setModelOutputs({"zones_landcover": output})
    model.addChildAlgorithm(zonal)
    return model


def main(out_dir):
    """Write every example model into ``out_dir``."""
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "landcover_per_zone.model3")
    if not landcover_per_zone().toFile(path):
        raise SystemExit(f"cannot write {path}")
    print(path)


if __name__ == "__main__":
    app = QgsApplication([], False)
    app.initQgis()
    main(
        sys.argv[1]
        if len(sys.argv) > 1
        else os.path.join(os.path.dirname(__file__), "..", "dinogeo_processing", "models")
    )
    app.exitQgis()
