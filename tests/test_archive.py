"""An archive on real folders: usable files, skipped files and why, the inferred sensor, dates."""

from __future__ import annotations

import csv
from datetime import date
from pathlib import Path

import pytest

from dinogeo.data.archive import scan_archive
from dinogeo.data.archive_sensor import sensor_candidates
from dinogeo.data.index import build_index, write_index
from dinogeo.errors import NoValidDataError, SensorError, SkippedFilesError, option_style
from tests.data.archive.mixed import RUFIJI, make_mixed_archive

VIRGINIA = "sentinel2-l1c-virginia-sattestdata"


@pytest.fixture(scope="module")
def mixed(shared_data, tmp_path_factory) -> tuple[Path, dict[str, list[Path]]]:
    folder = tmp_path_factory.mktemp("mixed")
    return folder, make_mixed_archive(folder, shared_data)


def reasons(archive) -> dict[str, str]:
    return {Path(s.path).name: s.reason for s in archive.skipped}


def test_rufiji_folder_infers_the_sensor_and_skips_the_class_maps(shared_data):
    archive = scan_archive([shared_data / RUFIJI])
    assert archive.sensor.name == "sentinel2_sr_x1000"
    assert archive.sensor_origin == "inferred from 21 of 23 readable files"
    assert len(archive.sources) == 21
    assert reasons(archive) == {
        "base_1997_class_img_sub.tif": "fits no shipped sensor (1 band uint8; a label, mask or "
        "other product?)",
        "base_1997_class_on_ts_grid.tif": "fits no shipped sensor (1 band uint8; a label, mask or "
        "other product?)",
    }
    # multi-date: every scene's acquisition date from its name, one place
    days = sorted(d.date() for d in archive.datetimes if d is not None)
    assert len(set(days)) == 21 and days[0] == date(2016, 3, 12) and days[-1] == date(2020, 1, 1)
    assert archive.dates_summary() == "21 dates 2016-03-12 ... 2020-01-01 over 1 place"
    # per-date masks: with 64-px chips needing half their pixels valid, the 95 % clouded date goes
    chips = scan_archive([shared_data / RUFIJI], chip_size=64, min_valid=0.5)
    assert len(chips.sources) == 20
    assert reasons(chips)["SEN2_20160829_T37MEM_20m_10band.tif"] == (
        "too little valid data: no 64-px chip reaches the valid fraction 0.5 (best 0.17; 169x140 "
        "px, clouds/nodata masked)"
    )
    report = archive.report("run/skipped_files.csv")
    assert report.splitlines()[0].startswith("archive: 21 of 23 files used, sensor sentinel2_sr")
    assert "base_1997_class_img_sub.tif and 1 more: fits no shipped sensor" in report
    assert "run/skipped_files.csv" in report


def test_mixed_folder_skips_labels_other_sensors_and_broken_files(mixed, tmp_path):
    folder, made = mixed
    archive = scan_archive([folder])
    assert archive.sensor.name == "sentinel2_sr_x1000"
    assert sorted(Path(p).name for p in archive.paths) == sorted(p.name for p in made["s2"])
    why = reasons(archive)
    for label in made["labels"]:
        assert why[label.name].startswith("fits no shipped sensor (1 band"), why[label.name]
    assert why["1091-322_05_img.tif"].startswith("other sensor: rgb_uint8, the run's is sentinel2")
    assert why["swiss_worldfile.png"].startswith("other sensor: rgb_uint8")
    assert why["S2_18SVG_20160112_10m_B02-B03-B04-B08_crop.tif"].startswith(
        "ambiguous sensor: fits sentinel2_l1c, sentinel2_l2a, sentinel2_sr_x1000"
    )
    assert why["corrupt.tif"].startswith("unreadable: cannot be opened as a raster")
    assert "no_worldfile.png" not in why  # a plain picture is not an archive member
    assert {"truncated.tif", "all_nodata.tif"} <= set(why)
    assert archive.dates_summary() == "5 dates 2016-03-12 ... 2021-05-27 over 2 places"
    # the CSV lists every skipped file with its reason
    out = archive.write_skipped(tmp_path / "skipped_files.csv")
    with out.open() as fh:
        rows = list(csv.DictReader(fh))
    assert {Path(r["path"]).name: r["reason"] for r in rows} == why
    assert len(rows) == len(archive.skipped) == 10


def test_strict_makes_any_skip_an_error(mixed):
    folder, _ = mixed
    with pytest.raises(SkippedFilesError, match=r"strict: 10 files do not fit the run") as err:
        scan_archive([folder], strict=True)
    assert "corrupt.tif" in str(err.value) and "strict=True" in str(err.value)
    archive = scan_archive([folder / "s2"], strict=True)  # nothing to skip: fine
    assert len(archive.sources) == 5


def test_a_named_sensor_skips_the_files_that_do_not_fit(mixed):
    folder, made = mixed
    archive = scan_archive([folder], sensor="rgb_uint8")
    used = sorted(Path(p).name for p in archive.paths)
    assert used == ["1091-322_05_img.tif", "swiss_worldfile.png"]
    why = reasons(archive)
    assert why["SEN2_20160312_T37MEM_20m_10band.tif"] == (
        "dtype uint16, sensor rgb_uint8 stores uint8"
    )


def test_ambiguous_or_tied_archives_stop_with_the_candidates(shared_data, mixed):
    with pytest.raises(SensorError, match="cannot infer the sensor") as err:
        scan_archive([shared_data / VIRGINIA])
    text = str(err.value)
    assert "sentinel2_l1c (2 files), sentinel2_l2a (2 files), sentinel2_sr_x1000 (2 files)" in text
    assert "sensor='sentinel2_l1c'" in text  # Python words
    with option_style("cli", "data."), pytest.raises(SensorError) as err:
        scan_archive([shared_data / VIRGINIA])
    assert "--data.sensor sentinel2_l1c" in str(err.value)  # command-line words
    folder, made = mixed
    tie = [made["s2"][0], folder / "broken" / "swiss_worldfile.png"]
    with pytest.raises(SensorError, match=r"as many files fit each of"):
        scan_archive(tie)


def test_band_errors_speak_the_interface_and_list_every_band_of_the_file(shared_data):
    rufiji = [shared_data / RUFIJI]
    with pytest.raises(NoValidDataError) as err:
        scan_archive(rufiji, sensor="sentinel2_l1c", bands=["B02", "B03", "B04", "B08"])
    text = str(err.value)
    ten = "'B01', 'B02', 'B03', 'B04', 'B05', 'B06', 'B07', 'B08', 'B8A', 'B09'"
    assert f"bands=[{ten}]" in text
    assert "sensor='sentinel2_sr_x1000'" in text
    with option_style("cli", "data."), pytest.raises(NoValidDataError) as err:
        scan_archive(rufiji, sensor="sentinel2_l1c", bands=["B02", "B03", "B04", "B08"])
    text = str(err.value)
    assert "--data.bands '[B01, B02, B03, B04, B05, B06, B07, B08, B8A, B09]'" in text
    assert "--data.sensor sentinel2_sr_x1000" in text
    # a band the sensor does not have is a configuration error, not a skip
    with option_style("cli", "data."), pytest.raises(SensorError, match=r"--data.bands '\[B02"):
        scan_archive(rufiji, bands=["B02", "B13"])


def test_every_source_gives_the_run_the_same_bands(shared_data):
    """A named sensor without bands: files holding a subset of its bands say which to train on."""
    virginia = [shared_data / VIRGINIA]
    with option_style("cli", "data."), pytest.raises(NoValidDataError) as err:
        scan_archive(virginia, sensor="sentinel2_l1c")
    assert (
        "S2_18SVG_20160112_10m_B02-B03-B04-B08_crop.tif: bands do not fit: the file has 4 of the "
        "run's 13 bands (B02 B03 B04 B08); train on those with --data.bands '[B02, B03, B04, B08]'"
    ) in str(err.value)
    archive = scan_archive(virginia, sensor="sentinel2_l1c", bands=["B02", "B03", "B04", "B08"])
    assert len(archive.sources) == 2 and not archive.skipped
    assert {tuple(s.sensor.band_names) for s in archive.sources} == {("B02", "B03", "B04", "B08")}
    assert archive.dates_summary() == "1 date 2016-01-12 over 2 places"


def test_nothing_usable_stops_with_the_reasons(mixed):
    folder, _ = mixed
    with pytest.raises(NoValidDataError, match=r"no file of the 4 fits a shipped sensor"):
        scan_archive([folder / "labels"])
    with pytest.raises(NoValidDataError) as err:
        scan_archive([folder / "labels"], sensor="sentinel2_sr_x1000")
    assert str(err.value) == (
        "no usable file among the 4 of the archive for sensor sentinel2_sr_x1000:\n"
        "  1091-322_05_treemask.tif and 3 more: dtype uint8, sensor sentinel2_sr_x1000 stores uint16"
    )
    with pytest.raises(NoValidDataError, match=r"no raster matched sources="):
        scan_archive([str(folder / "nothing*.tif")])


def test_index_rows_are_filtered_by_their_recorded_sensor(mixed, tmp_path):
    folder, made = mixed
    index = build_index([folder], progress=False)
    path = write_index(index, tmp_path / "archive.parquet")
    archive = scan_archive(index=path)
    assert sorted(Path(p).name for p in archive.paths) == sorted(p.name for p in made["s2"])
    why = reasons(archive)
    assert why["corrupt.tif"].startswith("unreadable (dinogeo index):")
    # the index records the acquisition time it parsed from the names
    assert sum(d is not None for d in archive.datetimes) == 5
    assert all(fp is not None for fp in archive.footprints)  # no file read for the masks
    rgb = scan_archive(index=path, sensor="rgb_uint8")
    assert sorted(Path(p).name for p in rgb.paths) == ["1091-322_05_img.tif", "swiss_worldfile.png"]
    assert reasons(rgb)["SEN2_20160312_T37MEM_20m_10band.tif"].startswith("dtype uint16")
    s2 = scan_archive(index=path, sensor="sentinel2_sr_x1000")
    assert len(s2.sources) == 5
    assert reasons(s2)["S2_18SVG_20160112_10m_B02-B03-B04-B08_crop.tif"].startswith(
        "bands do not fit: the file has 4 of the run's 10 bands (B02 B03 B04 B08)"
    )
    assert reasons(s2)["swiss_worldfile.png"] == (
        "other sensor: rgb_uint8 in the index, the run's is sentinel2_sr_x1000"
    )


def test_sensor_candidates_from_name_bands_and_dtype():
    assert sensor_candidates("x.tif", 10, "uint16", ["band1"] * 10) == ["sentinel2_sr_x1000"]
    assert sensor_candidates("x.tif", 4, "uint16", ["B02", "B03", "B04", "B08"]) == [
        "sentinel2_l1c",
        "sentinel2_l2a",
        "sentinel2_sr_x1000",
    ]
    assert sensor_candidates("S2A_MSIL1C_x.tif", 13, "uint16") == ["sentinel2_l1c"]
    assert sensor_candidates("x.tif", 3, "uint8") == ["rgb_uint8"]
    assert sensor_candidates("x.tif", 1, "uint8") == []
