"""Load a dinogeo ONNX export in the Deepness QGIS plugin itself and compare with dinogeo predict.

Runs in QGIS's own Python (``/usr/bin/python3`` on Debian), headless::

    QT_QPA_PLATFORM=offscreen PYTHONPATH=DEPS python3 qgis_plugin/tools/deepness_check.py \\
        --deepness DEEPNESS/src --dinogeo .venv/bin/dinogeo --bundle MODEL.safetensors \\
        --image IMAGE.tif --out OUT_DIR [--tile 256 --overlap 32]

* ``DEEPNESS/src``: the ``src`` folder of a checkout of https://github.com/PUTvision/qgis-plugin-deepness
  (not vendored here; ``git clone`` it), whose ``deepness`` package is the plugin.
* ``DINOGEO_ENV`` (optional): JSON of environment variables for the dinogeo commands (e.g.
  ``{"PYTHONPATH": "/path/to/checkout"}``); QGIS's ``PYTHONPATH`` is not passed to them.
* ``DEPS``: Deepness's Python requirements for QGIS's Python (its
  ``python_requirements/requirements.txt``: ``onnxruntime<=1.17``, ``opencv-python-headless<=4.9``;
  e.g. ``python3 -m pip install --target DEPS --no-deps onnxruntime==1.17.0
  opencv-python-headless==4.9.0.80 flatbuffers "protobuf<5"``, keeping QGIS's numpy).

Steps: ``dinogeo export BUNDLE --onnx`` (tile, overlap and the raster's pixel size written in
the metadata); ``dinogeo predict`` of the image with the same tile and overlap; then Deepness:
its ``Segmentor`` loads the ONNX, the parameters are what its dock widget takes from the
model's metadata (resolution, tile size, overlap %, no probability threshold, no small-segment
filter, every band of the layer mapped to the model inputs in order), and its
``MapProcessorSegmentation`` runs over the whole layer. Deepness's class map (argmax + 1) is
mapped to the bundle's class values, written to ``OUT/deepness.tif``, and compared with
dinogeo's map over the pixels both classify. Prints one JSON line (also ``OUT/deepness.json``).
"""

import argparse
import json
import os
import subprocess
import sys
import time
from unittest.mock import MagicMock


def run(cmd):
    """Run a dinogeo command (without QGIS's PYTHONPATH: its own Python); fail with its output."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(json.loads(os.environ.get("DINOGEO_ENV", "{}")))
    done = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, cmd))} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deepness", required=True, help="the src folder of a Deepness checkout")
    parser.add_argument("--dinogeo", required=True, help="the dinogeo executable")
    parser.add_argument("--bundle", required=True)
    parser.add_argument("--image", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--overlap", type=int, default=32)
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="reuse OUT's model.onnx and dinogeo.tif (rerun Deepness)",
    )
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)

    import numpy as np
    from osgeo import gdal
    from qgis.core import QgsApplication, QgsProject, QgsRasterLayer

    image = gdal.Open(args.image)
    pixel_cm = abs(image.GetGeoTransform()[1]) * 100
    onnx_path = os.path.join(args.out, "model.onnx")
    predicted = os.path.join(args.out, "dinogeo.tif")
    export_log = "reused " + onnx_path
    if not args.reuse:
        export_log = run(
            [
                args.dinogeo,
                "export",
                args.bundle,
                "--onnx",
                "-o",
                onnx_path,
                "--tile",
                args.tile,
                "--overlap",
                args.overlap,
                "--resolution_cm",
                pixel_cm,
                "--check_image",
                args.image,
                "--overwrite",
            ]
        )
        run(
            [
                args.dinogeo,
                "predict",
                "--model",
                args.bundle,
                args.image,
                "-o",
                predicted,
                "--tile",
                args.tile,
                "--overlap",
                args.overlap,
                "--vectorize",
                "false",
                "--overwrite",
            ]
        )

    app = QgsApplication([], False)
    app.initQgis()
    sys.path.insert(0, args.deepness)
    from deepness.common.channels_mapping import ChannelsMapping, ImageChannelStandaloneBand
    from deepness.common.processing_overlap import ProcessingOverlap, ProcessingOverlapOptions
    from deepness.common.processing_parameters.map_processing_parameters import ProcessedAreaType
    from deepness.common.processing_parameters.segmentation_parameters import (
        SegmentationParameters,
    )
    from deepness.processing.map_processor.map_processor_segmentation import (
        MapProcessorSegmentation,
    )
    from deepness.processing.models.model_base import ModelBase
    from deepness.processing.models.segmentor import Segmentor

    layer = QgsRasterLayer(args.image, "image")
    if not layer.isValid():
        raise SystemExit(f"QGIS cannot open {args.image}")
    QgsProject.instance().addMapLayer(layer)
    model_type = ModelBase.get_model_type_from_metadata(onnx_path)
    model = Segmentor(onnx_path)
    mapping = ChannelsMapping()  # as the dock's input-channel widget: the layer's bands in order
    mapping.set_image_channels(
        [
            ImageChannelStandaloneBand(band_number=b, name=layer.bandName(b))
            for b in range(1, layer.bandCount() + 1)
        ]
    )
    mapping.set_number_of_model_inputs_same_as_image_channels()
    threshold = model.get_metadata_segmentation_threshold() or 0.0  # dock: unchecked -> 0
    small = model.get_metadata_segmentation_small_segment() or 0
    params = SegmentationParameters(
        resolution_cm_per_px=model.get_metadata_resolution(),
        tile_size_px=model.get_metadata_tile_size(),
        batch_size=model.get_model_batch_size() or 1,
        local_cache=False,
        processed_area_type=ProcessedAreaType.ENTIRE_LAYER,
        mask_layer_id=None,
        input_layer_id=layer.id(),
        input_channels_mapping=mapping,
        postprocessing_dilate_erode_size=small,
        processing_overlap=ProcessingOverlap(
            ProcessingOverlapOptions.OVERLAP_IN_PERCENT,
            percentage=model.get_metadata_tiles_overlap(),
        ),
        pixel_classification__probability_threshold=threshold,
        model=model,
    )
    processor = MapProcessorSegmentation(
        rlayer=layer, vlayer_mask=None, map_canvas=MagicMock(), params=params
    )
    started = time.monotonic()
    processor.run()
    seconds = time.monotonic() - started
    result = np.asarray(processor.get_result_img())[0]  # channel + 1, 0 = not processed

    values = np.array(
        json.loads(model.sess.get_modelmeta().custom_metadata_map["dinogeo_class_values"])
    )
    names = model.get_outputs_channel_names()[0]
    deepness = np.where(result > 0, values[np.maximum(result - 1, 0)], 0).astype(np.uint8)
    out_tif = os.path.join(args.out, "deepness.tif")
    driver = gdal.GetDriverByName("GTiff")
    dst = driver.Create(out_tif, deepness.shape[1], deepness.shape[0], 1, gdal.GDT_Byte)
    dst.SetGeoTransform(image.GetGeoTransform())
    dst.SetProjection(image.GetProjection())
    dst.GetRasterBand(1).WriteArray(deepness)
    dst.GetRasterBand(1).SetNoDataValue(0)
    dst = None

    dino_ds = gdal.Open(predicted)  # kept referenced: its band dies with it
    dino = dino_ds.GetRasterBand(1).ReadAsArray()
    if dino.shape != deepness.shape:
        raise SystemExit(f"shapes differ: dinogeo {dino.shape}, Deepness {deepness.shape}")
    both = (dino > 0) & (deepness > 0)
    agree = float((dino[both] == deepness[both]).mean())
    valid_input = image.GetRasterBand(1).ReadAsArray() != image.GetRasterBand(1).GetNoDataValue()
    interior = np.zeros_like(both)
    m = args.tile // 2
    interior[m:-m, m:-m] = True
    inner = both & interior & valid_input
    report = {
        "model_type": model_type,
        "class_names": names,
        "deepness_params": {
            "resolution_cm_per_px": params.resolution_cm_per_px,
            "tile_size_px": params.tile_size_px,
            "overlap_percent": model.get_metadata_tiles_overlap(),
            "standardization_mean": [float(v) for v in model.standardization_parameters.mean],
            "standardization_std": [float(v) for v in model.standardization_parameters.std],
        },
        "shape": list(deepness.shape),
        "pixels_compared": int(both.sum()),
        "class_agreement": agree,
        "class_agreement_away_from_scene_edge": float((dino[inner] == deepness[inner]).mean())
        if inner.any()
        else None,
        "classes_dinogeo": {int(v): int((dino == v).sum()) for v in np.unique(dino)},
        "classes_deepness": {int(v): int((deepness == v).sum()) for v in np.unique(deepness)},
        "deepness_seconds": seconds,
        "export": export_log.strip().splitlines()[0],
    }
    with open(os.path.join(args.out, "deepness.json"), "w") as handle:
        json.dump(report, handle, indent=1)
    print(json.dumps(report), flush=True)
    os._exit(0)  # skip QGIS teardown with Deepness's objects alive


if __name__ == "__main__":
    main()
