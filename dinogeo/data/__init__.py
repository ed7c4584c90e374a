"""Data layer: sensor specs, raster/zarr sources, samplers, chip datasets and statistics.

Only the torch-free names are re-exported here; import the dataset and samplers from
``dinogeo.data.dataset`` and ``dinogeo.data.samplers``.
"""

from dinogeo.data.opener import open_source
from dinogeo.data.readers import RasterSource
from dinogeo.data.sensors import Band, Sensor, list_sensors, load_sensor
from dinogeo.data.source import Source

__all__ = ["Band", "RasterSource", "Sensor", "Source", "list_sensors", "load_sensor", "open_source"]
