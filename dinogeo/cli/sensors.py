"""``dinogeo sensors [NAME|PATH]``: list the shipped sensor specs, or show one in detail."""

from __future__ import annotations

import math

from dinogeo.data.sensors import Sensor, list_sensors, load_sensor

__all__ = ["format_sensor", "sensors"]


def _gsd_text(sensor: Sensor) -> str:
    gsds = sorted({b.gsd_m for b in sensor.bands if not math.isnan(b.gsd_m)})
    return "/".join(f"{g:g}" for g in gsds) + " m" if gsds else "?"


def format_sensor(sensor: Sensor) -> str:
    """Return a human-readable table of one sensor spec."""
    lines = [
        f"{sensor.name}: {sensor.description}",
        f"  dtype {sensor.dtype}, reflectance = DN * {sensor.scale:g} + {sensor.offset:g}, "
        f"nodata {sensor.nodata}",
        f"  source {sensor.source}",
        "",
        f"  {'band':<8} {'aliases':<24} {'wl nm':>7} {'gsd m':>6} {'mean':>8} {'std':>8}",
    ]
    for b in sensor.bands:
        wl = "-" if b.wavelength_nm is None else f"{b.wavelength_nm:g}"
        gsd = "-" if math.isnan(b.gsd_m) else f"{b.gsd_m:g}"
        lines.append(
            f"  {b.name:<8} {','.join(b.aliases):<24} {wl:>7} {gsd:>6} {b.mean:>8.4f} {b.std:>8.4f}"
        )
    return "\n".join(lines)


def sensors(sensor: str | None = None) -> int:
    """List the shipped sensor specs (name, GSD, dtype, bands), or show one in detail.

    Args:
        sensor: a shipped sensor name or a sensor YAML path to show (default: list them all).

    Returns:
        The exit status (0).
    """
    if sensor:
        print(format_sensor(load_sensor(sensor)))
        return 0
    specs = [load_sensor(n) for n in list_sensors()]
    width = max(len(s.name) for s in specs)
    print(f"{'name':<{width}}  {'gsd':<10} {'dtype':<7} bands")
    for s in specs:
        print(f"{s.name:<{width}}  {_gsd_text(s):<10} {s.dtype:<7} {' '.join(s.band_names)}")
    return 0
