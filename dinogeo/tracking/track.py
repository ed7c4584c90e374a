"""``track_series``: a dated image series to loss alerts, with the ``nrt`` monitors side by side.

Steps (method and defaults in docs/tracking.md):

1. open the series lazily (:func:`dinogeo.tracking.series.open_series`), split its dates into a
   history period (``history_start`` .. ``monitor_start``) and a monitoring period;
2. check everything that can fail before writing anything (dates, periods, reference points,
   output folder);
3. calibration pass over the tiles that hold reference points plus a sample of tiles: history
   false-alarm rates of every candidate threshold and the monitoring scores at the points; the
   threshold is given, fitted on the points (cross-validated), or set by the false-alarm target;
4. main pass, tile by tile (memory bounded by tile x dates): scores, sequential decision; every
   finished tile is saved in ``OUT.partial/`` so an interrupted run resumes (``resume=True``);
5. products: rasters, minimum mapping unit, alert polygons, QGIS styles, loss by period; with
   reference points the accuracy of dinogeo and of every ``nrt`` monitor on the same points.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from dinogeo.data.sensors import Sensor
from dinogeo.errors import ConfigError, NoValidDataError, OutputExistsError
from dinogeo.tracking import calibrate, outputs, tiles
from dinogeo.tracking.accuracy import alert_dates, compare_methods
from dinogeo.tracking.baselines import MONITORS
from dinogeo.tracking.decision import HIGH, sequential_alerts
from dinogeo.tracking.reference import load_reference, score_alerts
from dinogeo.tracking.series import SeriesError, open_series
from dinogeo.tracking.statistic import ChangeStatistic

__all__ = ["TrackResult", "track_series"]

#: calibration tiles (a spread sample of this many, plus those holding reference points)
_SAMPLE_TILES = 16
#: calibration tiles whose scores are kept on disk for the main pass
CACHE_TILES = 64
PRODUCTS = (
    "loss_date.tif",
    "confidence.tif",
    "magnitude.tif",
    "alerts.gpkg",
    "loss_by_period.csv",
    "loss_by_period.png",
)


@dataclass
class TrackResult:
    """What :func:`track_series` produced.

    Attributes:
        output: the output folder.
        files: the files written.
        threshold: the anomaly threshold used for the map.
        threshold_source: ``given``, ``points`` (cross-validated) or ``history``.
        alerts: number of alert polygons.
        metrics: accuracy per method (empty without reference points).
        seconds: wall time.
        pixel_dates: pixels x dates processed.
    """

    output: Path
    files: list[Path]
    threshold: float
    threshold_source: str
    alerts: int
    metrics: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    pixel_dates: int = 0

    def summary(self) -> str:
        """One paragraph for the console."""
        lines = [
            f"tracked {self.pixel_dates / 1e6:.2f} M pixel-dates in {self.seconds:.1f} s; threshold "
            f"{self.threshold:g} ({self.threshold_source}); {self.alerts} alert polygons -> {self.output}"
        ]
        for name, m in self.metrics.get("methods", {}).items():
            lag = m["lag_days"]["median"]
            lag_text = "-" if lag is None else f"{lag:.0f} d"
            lines.append(
                f"  {name:<28} UA {m['users_accuracy']:.3f}  PA {m['producers_accuracy']:.3f}  "
                f"F1 {m['f1']:.3f}  median lag {lag_text}"
            )
        return "\n".join(lines)


def _day(value: str | dt.date | None, name: str) -> np.datetime64 | None:
    if value is None:
        return None
    try:
        return np.datetime64(str(value)[:10], "D")
    except ValueError as err:
        raise ConfigError(f"{name}={value!r} is not a date; write YYYY-MM-DD") from err


def _monitors(baselines: Sequence[str] | None) -> tuple[str, ...]:
    if baselines is None:
        return MONITORS
    names = tuple(b.lower() for b in baselines if b.lower() != "none")
    unknown = [b for b in names if b not in MONITORS]
    if unknown:
        raise ConfigError(f"unknown nrt monitor(s) {unknown}; pick from {list(MONITORS)} or none")
    return names


def _mask_path(mask: str | Path | None) -> Path | None:
    if mask is None:
        return None
    path = Path(mask)
    if not path.is_file():
        raise SeriesError(f"{path}: the mask raster does not exist")
    return path


def _params_hash(params: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _prepare_output(out: Path, overwrite: bool, resume: bool) -> Path:
    partial = out.with_name(out.name + ".partial")
    existing = [out / p for p in PRODUCTS if (out / p).exists()]
    if existing and not (overwrite or resume):
        raise OutputExistsError(
            f"{out} already holds tracking products ({existing[0].name}...); pass overwrite=True "
            "(--overwrite) to replace them or another output folder"
        )
    if partial.exists() and not resume:
        shutil.rmtree(partial)
    return partial


def track_series(
    inputs: str | Path | Sequence[str | Path],
    output: str | Path,
    *,
    monitor_start: str | dt.date,
    history_start: str | dt.date | None = None,
    monitor_end: str | dt.date | None = None,
    sensor: str | Path | Sensor | None = None,
    bands: Sequence[str] | None = None,
    dates_csv: str | Path | None = None,
    reference: str | Path | None = None,
    index: str = "auto",
    smooth: int = 3,
    seasonal_order: int = 0,
    min_history: int = 6,
    window: int = 2,
    need: int = 1,
    threshold: float | None = None,
    false_alarm_rate: float = 0.05,
    calibrate_on: str = "auto",
    folds: int = 5,
    baselines: Sequence[str] | None = None,
    mmu_ha: float = 0.0,
    mask: str | Path | None = None,
    mask_values: Sequence[int] | None = None,
    backbone: str | Path | None = None,
    tile: int = 512,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> TrackResult:
    """Track forest loss through a dated image series into alert products.

    Args:
        inputs: rasters (one per date: files, folders, globs), one multi-band raster with
            ``dates_csv``, or a zarr store from ``dinogeo ingest``.
        output: output folder.
        monitor_start: first date of the monitoring period; earlier dates are the history.
        history_start: first history date (default: the first date of the series).
        monitor_end: last monitored date (default: the last date).
        sensor: sensor name or YAML (inferred for Sentinel-1 stacks with VV/VH band names).
        bands: the file's band names in order, when it holds a subset of the sensor's bands.
        dates_csv: dates of the files (``file,date``) or of a multi-band file's bands
            (``date,band_<name>...``).
        reference: dated reference points (``date`` column, empty = undisturbed) for
            calibration and accuracy.
        index: index channels of the statistic (``auto``, ``backscatter``, ``vh``, ``ndvi``,
            ``bands``).
        smooth: moving-average window in pixels before the statistic (1 = none).
        seasonal_order: harmonics of the history fit (0 = mean only).
        min_history: fewest valid history observations to monitor a pixel.
        window: valid observations within which an anomaly must be confirmed.
        need: anomalous observations among them that confirm it.
        threshold: fixed anomaly threshold (skips calibration).
        false_alarm_rate: target share of stable pixels with a confirmed false alarm over the
            monitoring period, estimated from the history (sets the label-free threshold).
        calibrate_on: ``auto`` (points when given, else history), ``points`` or ``history``.
        folds: cross-validation folds for the points calibration.
        baselines: ``nrt`` monitors to run on the reference points (None: ``ccdc``, ``ewma``,
            ``cusum`` and ``mosum``; empty or ``["none"]``: none).
        mmu_ha: minimum mapping unit of alerts in hectares.
        mask: raster of the region to monitor (e.g. a forest or mangrove map), warped onto the
            series grid; pixels outside are not monitored.
        mask_values: values of ``mask`` that are monitored (None: 1).
        backbone: a backbone (safetensors) whose frozen per-date features replace the index
            channels (direction-free statistic; adapted to the series' sensor when its bands
            differ); None: spectral indices.
        tile: tile size in pixels (memory ~ tile^2 x dates x bands x 4 bytes x 3).
        resume: continue an interrupted run into the same folder.
        overwrite: replace existing products.
        progress: show progress bars with an ETA and print a summary.

    Returns:
        A :class:`TrackResult`.

    Raises:
        SeriesError: too few dates, undated/duplicate dates, disjoint grids, no history before the
            monitoring start, no monitoring dates.
        LabelError: unreadable reference points or points outside the series.
        NoValidDataError: the series holds no valid observation.
        OutputExistsError: the output folder already holds products.
    """
    import time

    t0 = time.perf_counter()
    out = Path(output)
    series = open_series(inputs, sensor=sensor, bands=bands, dates_csv=dates_csv)
    d64 = series.dates64
    start = _day(monitor_start, "monitor_start")
    h0 = _day(history_start, "history_start") or d64[0]
    end = _day(monitor_end, "monitor_end") or d64[-1]
    hist = (d64 >= h0) & (d64 < start)
    mon = (d64 >= start) & (d64 <= end)
    if hist.sum() < max(min_history, 2):
        raise SeriesError(
            f"monitoring starts {start} but the series has {int(hist.sum())} dates before it "
            f"(from {h0}; first date {d64[0]}); the history needs at least {max(min_history, 2)}: "
            "start monitoring later, add earlier imagery, or lower min_history"
        )
    if not mon.any():
        raise SeriesError(f"no date between monitor_start {start} and {end} (last date {d64[-1]})")
    if calibrate_on not in ("auto", "points", "history"):
        raise ConfigError(f"calibrate_on={calibrate_on!r}; pick auto, points or history")
    monitors = _monitors(baselines)
    ref = None
    if reference is not None:
        ref = load_reference(reference, series.crs, series.transform, series.width, series.height)
    elif calibrate_on == "points":
        raise ConfigError("calibrate_on='points' needs reference points (reference=, --reference)")
    partial = _prepare_output(out, overwrite, resume)
    doy = np.array([d.timetuple().tm_yday for d in series.dates], float)
    setup = tiles.TileScorer(
        series,
        hist,
        mon,
        doy,
        index,
        int(smooth),
        ChangeStatistic(seasonal_order, min_history),
        _mask_path(mask),
        tuple(int(v) for v in (mask_values or (1,))),
    )
    if backbone is not None:
        from dinogeo.tracking.features import FeatureExtractor

        setup.features = FeatureExtractor(backbone, series.sensor)
    from dinogeo.inference.writer import gdal_cache

    cache = tiles.ScoreCache(CACHE_TILES)
    # GDAL's block cache would otherwise grow with the series' size
    with gdal_cache(tiles.gdal_cache_bytes(series, tile, int(smooth))):
        try:
            wins = tiles.tile_windows(series, tile)
            mon_idx = np.where(mon)[0]

            # ---- calibration pass: tiles with reference points plus a spread sample; one tile in memory
            sample_ids = set(
                np.linspace(0, len(wins) - 1, min(len(wins), _SAMPLE_TILES))
                .round()
                .astype(int)
                .tolist()
            )
            point_tile: dict[int, list[int]] = {}
            if ref is not None:
                for i, (r, c) in enumerate(zip(ref.rows, ref.cols)):
                    point_tile.setdefault(tiles.tile_index(series, tile, r, c), []).append(i)
            cal_ids = sorted(sample_ids | set(point_tile))
            exceed = calibrate.ExceedanceCounter()
            mon_obs, mon_pixels = 0, 0
            pt_scores = np.full(
                (len(mon_idx), len(ref) if ref is not None else 0), np.nan, np.float32
            )
            pt_raw = np.full(
                (len(d64), len(series.sensor.bands), pt_scores.shape[1]), np.nan, np.float32
            )
            for k in tqdm(cal_ids, desc="track: calibrate", unit="tile", disable=not progress):
                win = wins[k]
                scores, loo, monitored, raw = tiles.tile_scores(setup, win)
                cache.put(k, scores, monitored)  # reused by the main pass
                exceed.add(loo[:, monitored])
                mon_obs += int(np.isfinite(scores[mon_idx][:, monitored]).sum())
                mon_pixels += int(monitored.sum())
                for i in point_tile.get(k, []):
                    r, c = ref.rows[i] - int(win.row_off), ref.cols[i] - int(win.col_off)  # type: ignore[union-attr]
                    pt_scores[:, i] = scores[mon_idx, r, c] if monitored[r, c] else np.nan
                    pt_raw[:, :, i] = raw[:, :, r, c]
                del scores, loo, monitored, raw
            if exceed.total == 0:
                raise NoValidDataError(
                    f"{series.layers[0].path}: no pixel has {min_history} valid history observations in "
                    "the sampled tiles: the series is all nodata (or masked) over the history period"
                )
            m_obs = mon_obs / max(mon_pixels, 1)
            rates = exceed.false_alarm_rates(m_obs, window=window, need=need)
            thr_history = calibrate.threshold_from_history(rates, false_alarm_rate)
            metrics: dict[str, Any] = {}
            point_alerts = {
                i: sequential_alerts(pt_scores, float(t), window=window, need=need)
                for i, t in enumerate(calibrate.THRESHOLDS)
            }
            cv = None
            if threshold is not None:
                thr, source = float(threshold), "given"
            elif ref is not None and calibrate_on in ("auto", "points"):

                def f1_of(i: int, idx: np.ndarray) -> float:
                    a = point_alerts[i]
                    return float(
                        score_alerts(ref, a.confidence == HIGH, alert_dates(a, d64[mon_idx]), idx)[
                            "f1"
                        ]
                    )

                cv = calibrate.threshold_from_points(ref.disturbed, f1_of, folds=folds)
                thr, source = cv.threshold, "points"
            else:
                thr, source = thr_history, "history"

            # ---- main pass
            partial.mkdir(parents=True, exist_ok=True)
            params = {
                "inputs": [str(layer.path) for layer in series.layers],
                "dates": [str(d) for d in series.dates],
                "monitor": [str(start), str(end)],
                "history_start": str(h0),
                "index": index,
                "smooth": smooth,
                "seasonal_order": seasonal_order,
                "min_history": min_history,
                "window": window,
                "need": need,
                "threshold": thr,
                "tile": tile,
                "mask": [str(mask), list(mask_values or (1,))],
                "backbone": str(backbone),
            }
            key = _params_hash(params)
            state = partial / "state.json"
            if state.exists() and json.loads(state.read_text()).get("hash") != key:
                for f in partial.glob("tile_*.npz"):
                    f.unlink()
            state.write_text(json.dumps({"hash": key, "params": params}, indent=1))
            H, W = series.height, series.width
            loss = np.zeros((H, W), np.int32)
            conf = np.full((H, W), outputs.NOT_MONITORED, np.uint8)
            mag = np.full((H, W), np.nan, np.float32)
            mon_days = d64[mon_idx]
            yyyymmdd = np.array([int(str(d).replace("-", "")) for d in mon_days], np.int32)
            for k, win in enumerate(tqdm(wins, desc="track", unit="tile", disable=not progress)):
                f = partial / f"tile_{k:06d}.npz"
                if f.exists():
                    z = np.load(f)
                    tl, tc, tm = z["loss"], z["conf"], z["mag"]
                else:
                    kept = cache.pop(k)
                    if kept is not None:
                        scores, monitored = kept
                    else:
                        scores, _, monitored, _ = tiles.tile_scores(setup, win)
                    a = sequential_alerts(scores[mon_idx], thr, window=window, need=need)
                    tl = np.where(a.loss >= 0, yyyymmdd[np.maximum(a.loss, 0)], 0).astype(np.int32)
                    tc = np.where(monitored, a.confidence, outputs.NOT_MONITORED).astype(np.uint8)
                    tl[~monitored] = 0
                    tm = np.where(a.loss >= 0, a.magnitude, np.nan).astype(np.float32)
                    np.savez(f.with_suffix(".tmp.npz"), loss=tl, conf=tc, mag=tm)
                    f.with_suffix(".tmp.npz").rename(f)
                rs = slice(int(win.row_off), int(win.row_off + win.height))
                cs = slice(int(win.col_off), int(win.col_off + win.width))
                loss[rs, cs], conf[rs, cs], mag[rs, cs] = tl, tc, tm
            series.close()

            # ---- products (written into the partial folder, then moved)
            profile = {
                "driver": "GTiff",
                "crs": series.crs,
                "transform": series.transform,
                "width": W,
                "height": H,
            }
            n_alerts = outputs.apply_mmu_and_polygons(
                loss,
                conf,
                mag,
                series.crs,
                series.transform,
                partial / "alerts.gpkg",
                mmu_ha=mmu_ha,
            )
            outputs.write_raster(
                partial / "loss_date.tif",
                loss,
                dict(profile, nodata=0),
                "loss date YYYYMMDD (0 none)",
            )
            outputs.write_raster(
                partial / "confidence.tif",
                conf,
                dict(profile, nodata=outputs.NOT_MONITORED),
                "confidence 0 none 1 low 2 high",
            )
            outputs.write_raster(
                partial / "magnitude.tif",
                mag,
                dict(profile, nodata=float("nan")),
                "alert magnitude (sd)",
            )
            files = [partial / p for p in PRODUCTS[:4]]
            files += outputs.write_styles(partial, loss, mag)
            area = outputs.pixel_area_ha(series.crs, series.transform, W, H)
            outputs.loss_by_period(
                loss, conf, area, partial / "loss_by_period.csv", partial / "loss_by_period.png"
            )
            files += [partial / "loss_by_period.csv", partial / "loss_by_period.png"]
            if ref is not None:
                metrics = compare_methods(
                    ref, pt_raw, setup, point_alerts, thr_history, cv, mon_idx, monitors, progress
                )
                metrics.update(
                    threshold=thr,
                    threshold_source=source,
                    threshold_history=thr_history,
                    history_false_alarm_rates=dict(
                        zip([float(t) for t in calibrate.THRESHOLDS], rates.tolist())
                    ),
                    monitor_start=str(start),
                    history=[str(d64[hist][0]), str(d64[hist][-1])],
                )
                if cv is not None:
                    metrics["calibration"] = calibrate.summary(cv)
                files += outputs.write_metrics(partial, metrics)
                files.append(
                    outputs.write_point_table(
                        partial / "reference_points.csv", metrics.pop("per_point")
                    )
                )
            out.mkdir(parents=True, exist_ok=True)
            final = []
            for f in files:
                dest = out / f.name
                if dest.exists():
                    dest.unlink()
                f.rename(dest)
                final.append(dest)
            shutil.rmtree(partial, ignore_errors=True)
        finally:
            cache.close()
    result = TrackResult(
        out, final, thr, source, n_alerts, metrics, time.perf_counter() - t0, int(H * W * len(d64))
    )
    if progress:
        print(result.summary())
    return result
