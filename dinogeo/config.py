"""Run configurations as dicts: a shipped config name, a YAML file or a dict, plus overrides.

The one way the demo, the benchmarks and the tests build a run's configuration::

    cfg = load_config("demo/pretrain", {"trainer.max_time": {"minutes": 1},
                                        "data.sources": ["scene.tif"]})
    pretrain(cfg)          # dinogeo.ssl.pretrain; dinogeo.trainers.fit.fit likewise

Shipped configs name the sample data ``../shared/data/...``; they are read with those paths
pointing at :func:`dinogeo._paths.shared_data_dir`, so they run from any working directory.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from dinogeo._paths import config_text, resource_dir
from dinogeo.errors import ConfigError

__all__ = ["build_cli", "load_config", "set_key"]


def load_config(
    config: str | Path | Mapping[str, Any],
    overrides: Mapping[str, Any] | None = None,
    *,
    shared: Path | None = None,
) -> dict[str, Any]:
    """Return a run's configuration as a dict, with dotted-key overrides applied.

    Args:
        config: a YAML file, the name of a shipped config under ``configs/``
            (``"demo/pretrain"``, ``"finetune/land_cover_aberystwyth"``), or a dict (copied).
        overrides: ``{"dotted.key": value}``; list items are addressed by index
            (``"trainer.logger.0.init_args.save_dir"``); missing dict keys are created.
        shared: the shared-data folder for shipped configs (default: the resolved one).

    Returns:
        A new dict.

    Raises:
        ConfigError: the file or shipped config does not exist, is not a YAML mapping, or an
            override walks through a value that is not a dict or list.
    """
    if isinstance(config, Mapping):
        data: Any = copy.deepcopy(dict(config))
    else:
        path = Path(config)
        shipped = resource_dir("configs") / (
            str(config) if str(config).endswith(".yaml") else f"{config}.yaml"
        )
        if path.is_file():
            data = yaml.safe_load(path.read_text())
        elif shipped.is_file():
            data = yaml.safe_load(config_text(str(config), shared))
        else:
            raise ConfigError(
                f"config {config}: no such file, nor a shipped config under {shipped.parent.parent}"
            )
        if not isinstance(data, dict):
            raise ConfigError(
                f"config {config}: expected a YAML mapping, got {type(data).__name__}"
            )
    for key, value in (overrides or {}).items():
        set_key(data, key, value)
    return dict(data)


def set_key(config: dict[str, Any], key: str, value: Any) -> None:
    """Set ``config[a][b][c] = value`` for ``key = "a.b.c"`` (integers index lists).

    Raises:
        ConfigError: a part of the key walks into a value that is neither a dict nor a list, or
            a list index is out of range.
    """
    parts = key.split(".")
    node: Any = config
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"override {key}: {part!r} is not an index of a {len(node)}-list")
            if last:
                node[int(part)] = value
            else:
                node = node[int(part)]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            else:
                node = node.setdefault(part, {})
        else:
            where = ".".join(parts[:i])
            raise ConfigError(f"override {key}: {where} is {node!r}, not a mapping or list")


def build_cli[T](cli: Callable[..., T], args: list[str] | dict[str, Any], **kwargs: Any) -> T:
    """Build a LightningCLI (sub)class from an argument list or a config dict.

    Lightning warns when ``args`` is given while ``sys.argv`` holds arguments too (always the case
    under ``dinogeo``, pytest or a notebook); the arguments given are the ones meant, so the
    warning is silenced here.

    Args:
        cli: the LightningCLI class.
        args: command-line style arguments, or the configuration as a dict.
        **kwargs: the class's other keyword arguments (model/data classes are positional in
            LightningCLI; pass them as ``model_class=``/``datamodule_class=``).
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
        return cli(args=args, **kwargs)
