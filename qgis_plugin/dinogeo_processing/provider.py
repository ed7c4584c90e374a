"""The dinogeo Processing provider and its setting (the dinogeo executable)."""

import os

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from .algorithms import ALGORITHMS
from .runner import SETTING_EXECUTABLE

try:  # the Processing plugin's settings (Processing > Options > Providers)
    from processing.core.ProcessingConfig import ProcessingConfig, Setting
except ImportError:  # pragma: no cover - Processing is part of every QGIS install
    ProcessingConfig = Setting = None

PLUGIN_DIR = os.path.dirname(__file__)


class DinogeoProvider(QgsProcessingProvider):
    """Algorithms that run the dinogeo command in its own Python environment."""

    def id(self):
        return "dinogeo"

    def name(self):
        return "dinogeo"

    def longName(self):
        return "dinogeo (DINOv3 for satellite and aerial imagery)"

    def icon(self):
        return QIcon(os.path.join(PLUGIN_DIR, "icon.svg"))

    def svgIconPath(self):
        return os.path.join(PLUGIN_DIR, "icon.svg")

    def load(self):
        if ProcessingConfig is not None:
            ProcessingConfig.settingIcons[self.name()] = self.icon()
            ProcessingConfig.addSetting(
                Setting(
                    self.name(),
                    SETTING_EXECUTABLE,
                    "dinogeo executable (empty: 'dinogeo' on the PATH)",
                    "",
                    valuetype=Setting.FILE,
                )
            )
            ProcessingConfig.readSettings()
        self.refreshAlgorithms()
        return True

    def unload(self):
        if ProcessingConfig is not None:
            ProcessingConfig.removeSetting(SETTING_EXECUTABLE)

    def loadAlgorithms(self):
        for algorithm in ALGORITHMS:
            self.addAlgorithm(algorithm())
