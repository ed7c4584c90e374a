"""Write the example Processing models shipped with the plugin (run with QGIS's Python).

    QT_HASH_SEED=0 QT_QPA_PLATFORM=offscreen python3 qgis_plugin/tools/make_models.py qgis_plugin/dinogeo_processing/models

``train_map_validate.model3``: dinogeo fit (image + labelled polygons/points + class field +
backbone -> model bundle) -> dinogeo predict (the image with that bundle) -> dinogeo validate
(the bundle on independent points). Outputs ``predict:landcover`` and ``validate:report``.

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
    QgsProcessingParameterField,
    QgsProcessingParameterFile,
    QgsProcessingParameterNumber,
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


def _child(model, alg_id, child_id, description, x, y, sources, outputs=None):
    child = QgsProcessingModelChildAlgorithm(alg_id)
    child.setChildId(child_id)
    child.setDescription(description)
    child.setPosition(QPointF(x, y))
    for name, source in sources.items():
        child.addParameterSources(name, [source])
    for name, (child_output, text) in (outputs or {}).items():
        output = QgsProcessingModelOutput(name, text)
        output.setChildId(child_id)
        output.setChildOutputName(child_output)
        output.setPosition(QPointF(x + 180, y + 80))
        child.setModelOutputs({**child.modelOutputs(), name: output})
    model.addChildAlgorithm(child)


def train_map_validate():
    """dinogeo fit -> dinogeo predict -> dinogeo validate, in one model."""
    model = QgsProcessingModelAlgorithm(
        "Train, map and validate land cover", "dinogeo", "dinogeo_train_map_validate"
    )
    model.setHelpContent(
        {
            "ALG_DESC": "Trains a land-cover head from labelled polygons or points, maps the "
            "image with it and validates the map on independent points.",
            "image": "Raster file with the backbone's bands.",
            "labels": "Training polygons or points.",
            "field": "Class field of the labels (and of the validation points).",
            "validation": "Independent reference points (not used for training).",
            "backbone": "Backbone (.safetensors).",
            "steps": "Training steps.",
        }
    )
    _input(model, QgsProcessingParameterRasterLayer("image", "Image"), 80, 60)
    polygon_or_point = [QgsProcessing.TypeVectorPolygon, QgsProcessing.TypeVectorPoint]
    _input(model, QgsProcessingParameterVectorLayer("labels", "Labels", polygon_or_point), 260, 60)
    _input(
        model,
        QgsProcessingParameterField("field", "Class field", parentLayerParameterName="labels"),
        440,
        60,
    )
    _input(
        model,
        QgsProcessingParameterVectorLayer("validation", "Validation points", polygon_or_point),
        620,
        60,
    )
    _input(
        model,
        QgsProcessingParameterFile("backbone", "Backbone", extension="safetensors"),
        800,
        60,
    )
    _input(
        model,
        QgsProcessingParameterNumber(
            "steps", "Training steps", QgsProcessingParameterNumber.Integer, 200, False, 1
        ),
        980,
        60,
    )
    source = QgsProcessingModelChildParameterSource
    param = source.fromModelParameter
    _child(
        model,
        "dinogeo:fit",
        "fit",
        "dinogeo fit",
        200,
        200,
        {
            "INPUT": param("image"),
            "LABELS": param("labels"),
            "FIELD": param("field"),
            "BACKBONE": param("backbone"),
            "STEPS": param("steps"),
            "CHIP_SIZE": source.fromStaticValue(32),
        },
    )
    _child(
        model,
        "dinogeo:predict",
        "predict",
        "dinogeo predict",
        300,
        340,
        {
            "INPUT": param("image"),
            "MODEL": source.fromChildOutput("fit", "OUTPUT"),
            "TILE": source.fromStaticValue(256),
            "OVERLAP": source.fromStaticValue(32),
        },
        {"landcover": ("OUTPUT", "Land cover")},
    )
    _child(
        model,
        "dinogeo:validate",
        "validate",
        "dinogeo validate",
        600,
        340,
        {
            "MODEL": source.fromChildOutput("fit", "OUTPUT"),
            "INPUT": param("image"),
            "LABELS": param("validation"),
            "FIELD": param("field"),
        },
        {"report": ("OUTPUT", "Validation report")},
    )
    return model


def main(out_dir):
    """Write every example model into ``out_dir``."""
    os.makedirs(out_dir, exist_ok=True)
    for name, build in (
        ("landcover_per_zone", landcover_per_zone),
        ("train_map_validate", train_map_validate),
    ):
        path = os.path.join(out_dir, f"{name}.model3")
        if not build().toFile(path):
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
