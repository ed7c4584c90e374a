"""Data layer: sensor specs, raster/zarr sources, samplers, chip datasets and statistics.

Only the light, torch-free names are re-exported here; import the dataset and samplers from
``dinogeo.data.dataset`` and ``dinogeo.data.samplers``.
"""

from dinogeo.data.sensors import Band, Sensor, list_sensors, load_sensor

__all__ = ["Band", "Sensor", "list_sensors", "load_sensor"]
