"""dinogeo fit: train a land-cover head from a vector layer and a class field.

The classes come from the field's values (of the selected features when "selected features
only" is ticked); names and colours come from the layer's categorized style when it is styled on
that field. The plugin writes a task card and a fit config (JSON, which is YAML) next to the
bundle and runs ``dinogeo fit --config``.
"""

import json
import os

from qgis.core import (
    QgsCategorizedSymbolRenderer,
    QgsFeatureRequest,
    QgsProcessing,
    QgsProcessingException,
    QgsProcessingOutputFile,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
)

from .base import DinogeoAlgorithm

#: colours of classes when the layer is not styled by the class field (ColorBrewer Set1/Dark2)
PALETTE = [
    "#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#666666",
    "#e41a1c", "#377eb8", "#4daf4a", "#984ea3", "#ff7f00", "#ffff33", "#a65628", "#f781bf",
]  # fmt: skip


def _int_value(value):
    """The integer a class value stands for, or None (names stay names)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    return None


def task_card(name, values, styles):
    """A segmentation task card for the class values found in the labels.

    Args:
        name: the task name.
        values: the distinct non-null values of the class field.
        styles: {value as text: (label, '#rrggbb')} from the layer's categorized renderer.

    Returns:
        The task card as a dict (written as JSON).
    """
    ints = [_int_value(v) for v in values]
    numeric = all(i is not None and 1 <= i <= 254 for i in ints)
    classes = []
    ordered = (
        sorted(zip(ints, values)) if numeric else sorted(zip(ints, values), key=lambda p: str(p[1]))
    )
    for index, (number, value) in enumerate(ordered):
        label, color = styles.get(str(value), (None, None))
        entry = {
            "value": number if numeric else index + 1,
            "name": str(value) if not numeric else (label or str(value)),
            "color": color or PALETTE[index % len(PALETTE)],
        }
        if numeric and label and label != str(value):
            entry["aliases"] = [str(value)]
        classes.append(entry)
    return {
        "name": name,
        "kind": "segmentation",
        "target": "land cover class",
        "description": "classes of a QGIS layer, written by the dinogeo Processing plugin",
        "units": None,
        "dtype": "uint8",
        "nodata": 0,
        "valid_range": None,
        "classes": classes,
        "metrics": ["iou", "f1", "miou", "accuracy"],
    }


def _styles(layer, field):
    """{value: (label, colour)} of a layer styled by categories of ``field``."""
    renderer = layer.renderer() if layer is not None else None
    if not isinstance(renderer, QgsCategorizedSymbolRenderer):
        return {}
    if renderer.classAttribute() != field:
        return {}
    return {
        str(cat.value()): (cat.label() or str(cat.value()), cat.symbol().color().name())
        for cat in renderer.categories()
        if cat.symbol() is not None and cat.value() not in (None, "")
    }


class FitAlgorithm(DinogeoAlgorithm):
    """Train a land-cover head on a frozen backbone from labelled polygons or points."""

    NAME = "fit"
    DISPLAY = "Train a land-cover head from a vector layer"

    def initAlgorithm(self, config=None):
        self.addParameter(QgsProcessingParameterRasterLayer("INPUT", self.tr("Image")))
        self.addParameter(
            QgsProcessingParameterFeatureSource(
                "LABELS",
                self.tr("Training polygons or points"),
                [QgsProcessing.TypeVectorPolygon, QgsProcessing.TypeVectorPoint],
            )
        )
        self.addParameter(
            QgsProcessingParameterField(
                "FIELD", self.tr("Class field"), parentLayerParameterName="LABELS"
            )
        )
        self.addParameter(
            QgsProcessingParameterFile(
                "BACKBONE", self.tr("Backbone (.safetensors)"), extension="safetensors"
            )
        )
        self.addParameter(
            QgsProcessingParameterFeatureSource(
                "VAL_LABELS",
                self.tr("Validation polygons or points (default: spatial blocks held out)"),
                [QgsProcessing.TypeVectorPolygon, QgsProcessing.TypeVectorPoint],
                optional=True,
            )
        )
        self.addParameter(
            QgsProcessingParameterString(
                "SENSOR", self.tr("Sensor of the image (default: the backbone's)"), optional=True
            )
        )
        self.add_int("STEPS", "Training steps", 200, advanced=False)
        self.add_int("CHIP_SIZE", "Chip side (pixels)", 64, minimum=16)
        self.add_int("BATCH_SIZE", "Chips per step", 8)
        self.addParameter(
            QgsProcessingParameterNumber(
                "POINT_RADIUS",
                self.tr("Point label radius (pixels)"),
                type=QgsProcessingParameterNumber.Double,
                defaultValue=0.0,
                minValue=0.0,
            )
        )
        self.add_device()
        self.addParameter(
            QgsProcessingParameterFileDestination(
                "OUTPUT", self.tr("Model bundle"), fileFilter="Model bundle (*.safetensors)"
            )
        )
        self.addOutput(QgsProcessingOutputFile("TASK_CARD", self.tr("Task card (classes)")))
        self.addOutput(QgsProcessingOutputFile("CONFIG", self.tr("Fit config")))

    def processAlgorithm(self, parameters, context, feedback):
        image = self.raster_path(parameters, "INPUT", context)
        field = self.parameterAsString(parameters, "FIELD", context)
        source = self.parameterAsSource(parameters, "LABELS", context)
        if source is None:
            raise QgsProcessingException(self.invalidSourceError(parameters, "LABELS"))
        index = source.fields().lookupField(field)
        if index < 0:
            raise QgsProcessingException(f"the labels have no field '{field}'")
        request = QgsFeatureRequest().setFlags(QgsFeatureRequest.NoGeometry)
        request.setSubsetOfAttributes([index])
        values = {f.attribute(index) for f in source.getFeatures(request)}
        values = {v for v in values if v is not None and str(v).strip() and str(v) != "NULL"}
        if len(values) < 2:
            raise QgsProcessingException(
                f"field '{field}' holds {len(values)} class value(s) {sorted(map(str, values))}: "
                "a land-cover head needs at least two classes. Fix: pick the class field, or "
                "select features of several classes."
            )
        output = self.parameterAsFileOutput(parameters, "OUTPUT", context)
        if not output.lower().endswith(".safetensors"):
            output += ".safetensors"
        stem = os.path.splitext(output)[0]
        name = "".join(c if c.isalnum() else "_" for c in os.path.basename(stem)).strip("_")
        layer = self.parameterAsVectorLayer(parameters, "LABELS", context)
        card = task_card(name or "land_cover", values, _styles(layer, field))
        feedback.pushInfo(
            "classes: " + ", ".join(f"{c['value']} {c['name']}" for c in card["classes"])
        )
        labels, label_layer = self.vector_path(parameters, "LABELS", context, feedback)
        data = {
            "image": image,
            "labels": labels,
            "label_field": field,
            "label_layer": label_layer or None,
            "task": stem + "_task.json",
            "backbone": self.parameterAsFile(parameters, "BACKBONE", context),
            "point_radius": self.parameterAsDouble(parameters, "POINT_RADIUS", context),
            "chip_size": self.parameterAsInt(parameters, "CHIP_SIZE", context),
            "batch_size": self.parameterAsInt(parameters, "BATCH_SIZE", context),
        }
        data["block_size"] = max(data["chip_size"], 2 * data["chip_size"])
        sensor = self.parameterAsString(parameters, "SENSOR", context).strip()
        if sensor:
            data["sensor"] = sensor
        if parameters.get("VAL_LABELS"):
            data["val_labels"], val_layer = self.vector_path(
                parameters, "VAL_LABELS", context, feedback
            )
            data["val_label_layer"] = val_layer or None
        steps = self.parameterAsInt(parameters, "STEPS", context)
        data["chips_per_epoch"] = steps * data["batch_size"]
        device = self.device(parameters, context)
        config = {
            "seed_everything": 0,
            "trainer": {
                "max_steps": steps,
                "max_epochs": 1,
                "accelerator": "gpu" if device == "cuda" else "cpu",
                "devices": 1,
                "log_every_n_steps": max(1, min(10, steps)),
            },
            "model": {
                "class_path": "dinogeo.trainers.LandCoverTask",
                # a light DPT head with a full-resolution image branch (as the shipped
                # land-cover configs): trains in minutes on a CPU from a few polygons
                "init_args": {
                    "decoder": "dpt",
                    "features": 64,
                    "image_skip": 16,
                    "class_weights": "auto",
                    "lr": 1.0e-3,
                },
            },
            "data": {"class_path": "dinogeo.trainers.LabeledChipDataModule", "init_args": data},
        }
        os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
        with open(data["task"], "w", encoding="utf-8") as handle:
            json.dump(card, handle, indent=2)
        config_path = stem + "_fit.json"
        with open(config_path, "w", encoding="utf-8") as handle:
            json.dump(config, handle, indent=2)
        self.run_command(["fit", "--config", config_path, "--bundle_path", output], feedback)
        return {"OUTPUT": output, "TASK_CARD": data["task"], "CONFIG": config_path}
