"""Every option a config in configs/ sets is read by something.

Two checks per config file: the real CLI parser (``dinogeo pretrain`` / ``dinogeo fit``) accepts
it, so every key is an init argument or a dataclass field; and every key set for a dinogeo class
is used: an ``__init__`` argument is referenced in the ``__init__`` body, an option-dataclass field
is read as an attribute somewhere in the package outside its definition (the check that catches a
field that is parsed, stored and then ignored, such as the former ``model.loss.mask_ratio``).
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import importlib.util
import inspect
import textwrap
import typing
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

import dinogeo
from dinogeo.errors import ConfigError
from dinogeo.ssl.checkpointing import PreemptionCheckpoint
from dinogeo.ssl.datamodule import SSLDataModule
from dinogeo.ssl.module import SSLTask
from dinogeo.ssl.monitor import CollapseMonitor, KNNProbe
from dinogeo.ssl.pretrain import STAGES, PretrainCLI, stage_of
from dinogeo.ssl.task_config import LossConfig
from dinogeo.trainers.base import DenseTask
from dinogeo.trainers.fit import FitCLI

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = Path(dinogeo.__file__).parent
CONFIGS = sorted(p.relative_to(ROOT / "configs") for p in (ROOT / "configs").rglob("*.yaml"))
#: sections of a pretraining config and the dinogeo class that reads them
PRETRAIN_SECTIONS = {
    "data": SSLDataModule,
    "collapse": CollapseMonitor,
    "knn_probe": KNNProbe,
    "preemption": PreemptionCheckpoint,
}


def _is_pretrain(config: dict[str, Any]) -> bool:
    model = config.get("model", {})
    return not (isinstance(model, dict) and "class_path" in model)


class _ParsePretrain(PretrainCLI):
    def instantiate_classes(self) -> None:
        return None


class _ParseFit(FitCLI):
    def instantiate_classes(self) -> None:
        return None


@cache
def _attribute_reads() -> dict[str, set[str]]:
    """Attribute names read (``x.name`` in a load context) in each module of the package."""
    reads: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        reads[str(path)] = {
            node.attr
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load)
        }
    return reads


@cache
def _import_closure(module: str) -> frozenset[str]:
    """Source files of ``module`` and of every dinogeo module it imports, transitively."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            spec = None
        if spec is None or spec.origin is None or spec.origin in seen:
            continue
        seen.add(spec.origin)
        for node in ast.walk(ast.parse(Path(spec.origin).read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("dinogeo"):
                todo.append(str(node.module))
                todo += [f"{node.module}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                todo += [a.name for a in node.names if a.name.startswith("dinogeo")]
    return frozenset(seen)


def _field_is_read(owner: type, group: type, name: str) -> bool:
    """Whether code that ``owner`` runs (its module and what it imports) reads ``group.name``."""
    own = inspect.getsourcefile(group)
    scope = _import_closure(owner.__module__)
    return any(
        name in attrs for path, attrs in _attribute_reads().items() if path != own and path in scope
    )


def _declaring_class(cls: type, name: str) -> type:
    """The class of the MRO whose ``__init__`` names ``name`` (``**kwargs`` pass it up)."""
    for klass in cls.__mro__:
        if "__init__" in vars(klass) and name in inspect.signature(klass.__init__).parameters:
            return klass
    return cls


@cache
def _module_names(path: str) -> set[str]:
    """Attribute names and string constants of a module (``self.hparams["x"]`` / ``hparams.x``)."""
    tree = ast.parse(Path(path).read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
            names.add(node.attr)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            names.add(node.value)
    return names


def _init_uses(cls: type, name: str) -> bool:
    """Whether the ``__init__`` that declares ``name`` uses it: referenced in its body, or saved
    with ``save_hyperparameters()`` and read back from ``hparams`` in the class's module."""
    cls = _declaring_class(cls, name)
    if not cls.__module__.startswith("dinogeo"):
        return True  # declared by Lightning / torch: their parser is the check
    source = textwrap.dedent(inspect.getsource(cls.__init__))
    func = ast.parse(source).body[0]
    assert isinstance(func, ast.FunctionDef)
    body = [node for stmt in func.body for node in ast.walk(stmt)]
    if any(isinstance(n, ast.Name) and n.id == name and isinstance(n.ctx, ast.Load) for n in body):
        return True
    saves_all = any(
        isinstance(n, ast.Call)
        and isinstance(n.func, ast.Attribute)
        and n.func.attr == "save_hyperparameters"
        and not n.args
        for n in body
    )
    return saves_all and name in _module_names(str(inspect.getsourcefile(cls)))


def _dataclass_of(annotation: Any) -> type | None:
    for arg in (annotation, *typing.get_args(annotation)):
        if dataclasses.is_dataclass(arg) and isinstance(arg, type):
            return arg
    return None


def unread_keys(cls: type, options: dict[str, Any], where: str) -> list[str]:
    """Keys of ``options`` (init arguments of ``cls``) that nothing reads."""
    if not cls.__module__.startswith("dinogeo"):
        return []  # Lightning's and torch's own classes: their parser is the check
    missing = []
    for key, value in options.items():
        if not _init_uses(cls, key):
            missing.append(f"{where}.{key}")
            continue
        owner = _declaring_class(cls, key)
        group = _dataclass_of(typing.get_type_hints(owner.__init__).get(key))
        if group is not None and isinstance(value, dict):
            missing += [
                f"{where}.{key}.{field}"
                for field in value
                if not _field_is_read(owner, group, field)
            ]
    return missing


def config_unread_keys(config: dict[str, Any]) -> list[str]:
    """Every option of a parsed-YAML config that nothing in dinogeo reads."""
    missing: list[str] = []
    if _is_pretrain(config):
        missing += unread_keys(STAGES[stage_of(config)], config.get("model") or {}, "model")
        for section, cls in PRETRAIN_SECTIONS.items():
            missing += unread_keys(cls, config.get(section) or {}, section)
    else:
        for section in ("model", "data"):
            spec = config.get(section) or {}
            module, _, name = spec["class_path"].rpartition(".")
            cls = getattr(importlib.import_module(module), name)
            missing += unread_keys(cls, spec.get("init_args") or {}, f"{section}.init_args")
    for i, callback in enumerate((config.get("trainer") or {}).get("callbacks") or []):
        module, _, name = callback["class_path"].rpartition(".")
        cls = getattr(importlib.import_module(module), name)
        missing += unread_keys(cls, callback.get("init_args") or {}, f"trainer.callbacks[{i}]")
    return missing


#: stage deltas that only parse over their base config (the stage is the base's)
BASES = {"ssl/distill_ddp.yaml": "ssl/distill.yaml"}


@pytest.mark.parametrize("name", CONFIGS, ids=str)
def test_config_parses_and_every_key_is_read(name, tmp_path, monkeypatch):
    path = ROOT / "configs" / name
    config = yaml.safe_load(path.read_text())
    base = BASES.get(str(name))
    monkeypatch.chdir(tmp_path)  # parsing must not write anything
    if _is_pretrain(config):
        args = ["--config", str(ROOT / "configs" / base)] if base else []
        if base:
            config = {
                "stage": stage_of(yaml.safe_load((ROOT / "configs" / base).read_text())),
                **config,
            }
        _ParsePretrain(
            STAGES[stage_of(config)],
            SSLDataModule,
            run=False,
            args=[*args, "--config", str(path)],
        )
    else:
        _ParseFit(
            DenseTask,
            subclass_mode_model=True,
            subclass_mode_data=True,
            run=False,
            args=["--config", str(path)],
            auto_configure_optimizers=False,
        )
    assert config_unread_keys(config) == []


@dataclasses.dataclass
class _Options:
    lr: float = 0.0  # a name the package reads
    never_read_option: int = 0


class _Reader:
    def __init__(self, opts: _Options | None = None, spare: int = 0) -> None:
        self.value = (opts or _Options()).lr


_Reader.__module__ = "dinogeo.ssl.module"  # checked against the code SSLTask runs


def test_an_unread_option_is_caught():
    """A parsed-but-ignored dataclass field and an unused init argument are found, and so is
    ``model.loss.mask_ratio`` in a pretraining config: only distillation reads it."""
    found = unread_keys(_Reader, {"opts": {"lr": 1, "never_read_option": 2}, "spare": 3}, "model")
    assert sorted(found) == ["model.opts.never_read_option", "model.spare"]
    pretraining = {"model": {"loss": {"mask_ratio": [0.1, 0.5], "koleo_weight": 0.1}}}
    assert config_unread_keys(pretraining) == ["model.loss.mask_ratio"]


def test_pretraining_refuses_the_distillation_mask_options():
    with pytest.raises(ConfigError, match="data.mask_ratio"):
        SSLTask(arch="vit_test_patch16_dinov3", loss=LossConfig(mask_ratio=(0.2, 0.6)))
