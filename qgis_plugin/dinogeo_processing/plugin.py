"""The QGIS plugin: registers the dinogeo Processing provider (also headless, in qgis_process)."""

from qgis.core import QgsApplication

from .provider import DinogeoProvider


class DinogeoPlugin:
    """Adds the provider in initProcessing, so qgis_process sees it without a GUI."""

    def __init__(self, iface=None):
        self.iface = iface
        self.provider = None

    def initProcessing(self):
        self.provider = DinogeoProvider()
        QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self):
        self.initProcessing()

    def unload(self):
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
