"""LabelSpec: the label options of the data modules and `dinogeo validate`, checked once."""

from pathlib import Path

import pytest

from dinogeo.errors import ConfigError, LabelError
from dinogeo.labels.label_spec import LabelSpec
from dinogeo.labels.sources import LabelKeys, LabelSource


def test_one_record_of_the_label_options():
    spec = LabelSpec("state", "west", "EPSG:4326", 2)
    assert spec.point_radius == 2.0 and isinstance(spec.point_radius, float)
    assert spec.source("halves.gpkg") == LabelSource(Path("halves.gpkg"), "west")
    assert spec.source("halves.gpkg|layername=west") == LabelSource(Path("halves.gpkg"), "west")
    with pytest.raises(LabelError, match="label_layer"):
        spec.source("halves.gpkg|layername=east")  # the layer named twice, differently
    keys = LabelKeys.prefixed("data.init_args.", validation=True)
    val = spec.for_validation("east", None, keys)
    assert (val.field, val.layer, val.crs, val.point_radius) == ("state", "east", "EPSG:4326", 2.0)
    assert val.for_validation(None, "klass", keys).field == "klass"
    with pytest.raises(LabelError, match="data.init_args.val_label_layer"):
        val.source("halves.gpkg|layername=west")


@pytest.mark.parametrize("radius", [-1.0, float("nan"), float("inf")])
def test_a_point_radius_that_is_no_radius_is_refused(radius):
    with pytest.raises(ConfigError, match=r"^point_radius must be a number of pixels >= 0"):
        LabelSpec(point_radius=radius)
    with pytest.raises(ConfigError, match=r"^data.init_args.point_radius must"):
        LabelSpec(point_radius=radius, keys=LabelKeys.prefixed("data.init_args."))
