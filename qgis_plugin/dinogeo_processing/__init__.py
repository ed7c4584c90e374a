"""dinogeo Processing provider for QGIS (pure PyQGIS: runs the dinogeo executable)."""


def classFactory(iface):  # noqa: N802 - the name QGIS looks up
    """QGIS plugin entry point."""
    from .plugin import DinogeoPlugin

    return DinogeoPlugin(iface)
