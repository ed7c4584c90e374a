import pytest

from dinogeo.errors import ConfigError, LabelError
from dinogeo.models.task_card import TaskCard, list_task_cards, load_task_card


def test_shipped_cards_load_and_roundtrip():
    names = list_task_cards()
    assert {
        "land_cover",
        "canopy_height",
        "change",
        "land_cover_aberystwyth",
        "land_cover_nc1996",
    } <= set(names)
    for name in names:
        card = load_task_card(name)
        assert TaskCard.from_json(card.to_json()) == card
        if card.is_classification:
            assert card.num_outputs == len(card.classes) >= 2
            assert card.nodata not in card.class_values
        else:
            assert card.num_outputs == 1 and card.valid_range is not None


def test_class_mapping_by_name_alias_and_code():
    card = load_task_card("land_cover_nc1996")
    assert card.class_index("Forest") == 4
    assert card.class_index("trees") == 4
    assert card.class_index(5) == 4
    assert card.class_index("5") == 4
    assert card.class_index(1.0) == 0
    with pytest.raises(LabelError, match="unknown class 'bogus' in a.shp.*7=sediment"):
        card.class_index("bogus", source="a.shp")
    with pytest.raises(LabelError):
        card.class_index(9)


def test_invalid_cards(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: x\nkind: segmentation\ntarget: t\ndtype: uint8\nnodata: 1\n"
        "classes:\n  - {value: 1, name: a, color: '#000000'}\n  - {value: 2, name: b, color: '#ffffff'}\n"
    )
    with pytest.raises(ConfigError, match="nodata 1 is also a class value"):
        load_task_card(bad)
    bad.write_text("name: x\nkind: blob\ntarget: t\ndtype: uint8\n")
    with pytest.raises(ConfigError, match="kind 'blob'"):
        load_task_card(bad)
    with pytest.raises(ConfigError, match="unknown task card 'nope'"):
        load_task_card("nope")
