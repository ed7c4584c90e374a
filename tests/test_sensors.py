"""Sensor specs: shipped YAMLs, user YAMLs, band selection and normalisation."""

from __future__ import annotations

import numpy as np
import pytest

from dinogeo.cli.main import main as cli_main
from dinogeo.data.band_match import generic_sensor
from dinogeo.data.sensors import Sensor, list_sensors, load_sensor, save_sensor
from dinogeo.errors import SensorError

REQUIRED = {
    "sentinel2_l1c",
    "sentinel2_l2a",
    "landsat7_etm",
    "landsat89_oli_l1",
    "landsat89_oli_l2",
    "naip",
    "planetscope_sr_4band",
    "maxar_rgb_sat493m",
    "rgb_uint8",
}


def test_shipped_sensors_load_and_are_consistent():
    names = list_sensors()
    assert REQUIRED <= set(names)
    for name in names:
        s = load_sensor(name)
        assert s.name == name
        assert np.dtype(s.dtype)
        assert all(b.std > 0 for b in s.bands)
        assert len(set(s.band_names)) == len(s.band_names)
        if {"VV", "VH"} & set(s.band_names):  # radar backscatter: statistics in dB
            assert all(-30.0 < b.mean < 5.0 for b in s.bands), name
            continue
        # statistics are reflectance units: plausible range for every optical product here
        assert all(-0.2 < b.mean < 1.0 for b in s.bands), name


def test_product_facts():
    s2a = load_sensor("sentinel2_l2a")
    assert len(s2a.bands) == 12 and "B10" not in s2a.band_names
    assert s2a.scale == pytest.approx(1e-4) and s2a.offset == pytest.approx(-0.1)
    assert len(load_sensor("sentinel2_l1c").bands) == 13
    l2 = load_sensor("landsat89_oli_l2")
    assert l2.scale == pytest.approx(2.75e-5) and l2.offset == pytest.approx(-0.2)
    sat = load_sensor("maxar_rgb_sat493m")
    assert [b.mean for b in sat.bands] == pytest.approx([0.430, 0.411, 0.296])
    assert [b.std for b in sat.bands] == pytest.approx([0.213, 0.156, 0.143])
    naip = load_sensor("naip")
    assert naip.dtype == "uint8" and len(naip.bands) == 4


def test_select_by_name_and_alias_reorders():
    s2 = load_sensor("sentinel2_l2a")
    sub = s2.select(["nir", "B04", "green", "SWIR16"])
    assert sub.band_names == ("B08", "B04", "B03", "B11")
    assert sub.bands[0].mean == s2.bands[s2.index("B08")].mean


def test_unknown_band_and_sensor_list_valid_names():
    s2 = load_sensor("sentinel2_l2a")
    with pytest.raises(SensorError, match="B8A"):
        s2.select(["B13"])
    with pytest.raises(SensorError, match="sentinel2_l2a"):
        load_sensor("sentinel3_olci")
    with pytest.raises(SensorError, match="twice"):
        s2.select(["red", "B04"])


def test_normalize_matches_formula():
    s = load_sensor("landsat89_oli_l2").select(["red", "nir"])
    raw = np.array([[[10000, 20000]], [[30000, 0]]], dtype=np.uint16)
    out = s.normalize(raw)
    assert out.dtype == np.float32
    refl = raw.astype(np.float64) * 2.75e-5 - 0.2
    exp = (refl - np.array([b.mean for b in s.bands])[:, None, None]) / np.array(
        [b.std for b in s.bands]
    )[:, None, None]
    np.testing.assert_allclose(out, exp, rtol=1e-5, atol=1e-5)
    with pytest.raises(SensorError, match="3 bands|2 bands"):
        s.normalize(np.zeros((3, 2, 2), np.uint16))


def test_user_yaml_for_aberystwyth_sr_x1000(tmp_path, shared_data):
    """The Aberystwyth S2 file is SR x1000 with 10 bands B2..B12: describe it with a user YAML."""
    s2 = load_sensor("sentinel2_l2a")
    ten = s2.select(["B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12"])
    user = Sensor.from_dict(
        {**ten.to_dict(), "name": "aber_s2_sr1000", "scale": 1e-3, "offset": 0.0}
    )
    path = save_sensor(user, tmp_path / "aber.yaml", header="Aberystwyth S2 SR x1000")
    loaded = load_sensor(path)
    assert loaded == user and loaded.source == str(path)
    assert (tmp_path / "aber.yaml").read_text().startswith("# Aberystwyth")
    # the spec reads the real file: normalised values centred near 0 (reflectance stats)
    import rasterio

    f = shared_data / "sentinel2-landcover-aberystwyth-rsgislib/sen2_20210527_aber_10band_crop.tif"
    with rasterio.open(f) as ds:
        raw = ds.read()
    z = loaded.normalize(raw)
    assert raw.shape[0] == len(loaded.bands)
    assert np.all(np.abs(np.median(z, axis=(1, 2))) < 3)


def test_bad_yaml(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("name: x\ndtype: uint8\nbands:\n  - {name: a, std: 0}\n")
    with pytest.raises(SensorError, match="std > 0"):
        load_sensor(p)
    p.write_text("name: x\n")
    with pytest.raises(SensorError, match="lacks"):
        load_sensor(p)
    with pytest.raises(SensorError, match="does not exist"):
        load_sensor(tmp_path / "missing.yaml")


def test_generic_sensor_dtype_range():
    g = generic_sensor(2, "uint8")
    assert g.band_names == ("band_1", "band_2")
    out = g.normalize(np.full((2, 1, 1), 255, np.uint8))
    np.testing.assert_allclose(out, 1.0)
    assert generic_sensor(1, "float32").scale == 1.0


def test_cli_lists_and_shows(capsys):
    assert cli_main(["sensors"]) == 0
    out = capsys.readouterr().out
    assert "sentinel2_l2a" in out and "B8A" in out and "10/20/60 m" in out
    assert cli_main(["sensors", "maxar_rgb_sat493m"]) == 0
    assert "0.4300" in capsys.readouterr().out
    assert cli_main(["sensors", "nope"]) == 1
    assert "shipped sensors" in capsys.readouterr().err
