"""``dinogeo stats PATHS... [--sensor S] [--bands B ...] [-o sensor.yaml]``.

Streams per-band normalisation statistics (reflectance units, valid pixels only) over rasters,
folders and zarr stores, prints them, and optionally writes a sensor YAML with them filled in.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any

from dinogeo.errors import OutputExistsError

__all__ = ["run"]


def run(
    options: dict[str, Any],
    *,
    output: str | None = None,
    name: str | None = None,
    window_size: int = 1024,
    overwrite: bool = False,
    progress: bool = True,
) -> int:
    """Stream per-band mean/std of the opened archive, print them and optionally save a YAML.

    Args:
        options: the keyword arguments of :func:`~dinogeo.data.stats.open_archive`.
        output: write a sensor YAML with the statistics here.
        name: name of the written sensor (default: the sensor's name).
        window_size: window side in pixels.
        overwrite: replace an existing ``output``.
        progress: show a progress bar.

    Returns:
        The exit status (0 on success).
    """
    from dinogeo.data.sensors import save_sensor
    from dinogeo.data.stats import compute_stats, open_archive, sensor_with_stats

    out = Path(output) if output is not None else None
    if out is not None and out.exists() and not overwrite:
        raise OutputExistsError(f"{out} exists; pass --overwrite to replace it")
    sources = open_archive(**options)
    stats = compute_stats(sources, window_size=window_size, progress=progress)
    spec = sensor_with_stats(sources[0].sensor, stats, name)
    print(f"{len(sources)} sources, {stats.count} valid pixels per band")
    print(f"{'band':<10} {'mean':>10} {'std':>10}")
    for b in spec.bands:
        print(f"{b.name:<10} {b.mean:>10.6f} {b.std:>10.6f}")
    if out is not None:
        stamp = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d")
        header = (
            f"statistics computed by `dinogeo stats` on {stamp} over {len(sources)} sources\n"
            f"({stats.count} valid pixels per band; reflectance = DN * scale + offset)"
        )
        save_sensor(spec, out, header=header)
        print(f"wrote {out}")
    return 0
