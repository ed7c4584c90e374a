"""One configuration mechanism for every ``dinogeo`` command: a function's signature is its CLI.

A command is registered from the Python function it runs::

    register_command(
        "embed",
        "dinogeo.inference.embed:embed_raster",     # or the function itself
        positional=("src",),                        # taken without a flag
        output="dst",                               # also spelled -o / --output
        switches={"--keep": ("overwrite", False)},  # a flag that sets a parameter
    )

Every parameter of the function becomes an option named after it (``--batch_size``, also spelled
``--batch-size``), typed from its annotation and documented from its Google-style docstring;
required parameters are required options (or positional arguments). A function with a ``progress``
parameter also takes ``-q``/``--quiet`` (``progress=False``). Booleans take ``--flag``,
``--flag true|false`` and ``--no-flag``. Parsing is jsonargparse's, so every command also takes
``--config FILE.yaml`` (keys are the function's keyword names, command-line values win) and
``--print_config`` (prints a YAML that ``--config`` reads back). The function is imported only
when its command runs, so ``dinogeo sensors`` never imports torch.

A ``run`` hook handles what is not the function's job: printing a report, choosing between two
functions, or CLI-only options. Its first parameter receives the function's options as a dict;
its keyword parameters become further options (documented from its docstring)::

    def report(options: dict[str, Any], *, json: str | None = None) -> int: ...
"""

from __future__ import annotations

import builtins
import importlib
import inspect
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from jsonargparse import ActionConfigFile, ArgumentParser

__all__ = ["COMMANDS", "QUIET", "Command", "register_command", "resolve"]

#: every registered command, by name (the order of ``dinogeo --help``)
COMMANDS: dict[str, Command] = {}

#: the switches of every command whose function reports progress
QUIET: dict[str, tuple[str, Any]] = {"--quiet": ("progress", False), "-q": ("progress", False)}

_SCALARS = (str, int, float, bool, type(None))


def resolve(target: str | Callable[..., Any]) -> Callable[..., Any]:
    """Return the callable named by ``"package.module:attribute"`` (or ``target`` itself)."""
    if callable(target):
        return target
    module, _, attr = target.partition(":")
    fn: Callable[..., Any] = getattr(importlib.import_module(module), attr)
    return fn


@dataclass(frozen=True)
class Command:
    """A ``dinogeo`` subcommand built from the signature of the function it runs.

    Attributes:
        name: the subcommand (``dinogeo NAME``).
        function: the function, or ``"module:attribute"`` (imported when the command runs).
        help: one line for ``dinogeo --help`` (default: the docstring's first line, which
            imports the function).
        positional: parameters given without a flag, in order; a list-typed one takes one
            or more values, an optional one may be left out.
        aliases: parameter -> extra option strings (``{"dst": ("-o", "--output")}``).
        switches: flag -> (parameter, value) it sets (``{"--keep": ("overwrite", False)}``),
            besides :data:`QUIET`, which every function with a ``progress`` parameter gets.
        run: hook ``run(options, **extra) -> int`` called instead of ``function(**options)``;
            its keyword parameters are options too.
        raw: the function takes the raw argument list (``fit(argv)``, ``pretrain(argv)``) and
            parses it itself: the LightningCLI commands, configured the same way from their
            classes' signatures. An int result is the exit status.
    """

    name: str
    function: str | Callable[..., Any]
    help: str = ""
    positional: tuple[str, ...] = ()
    aliases: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    switches: Mapping[str, tuple[str, Any]] = field(default_factory=dict)
    run: str | Callable[..., Any] | None = None
    raw: bool = False

    def summary(self) -> str:
        """Return the one-line help of the command."""
        if self.help:
            return self.help
        doc = inspect.getdoc(resolve(self.function)) or ""
        return doc.strip().splitlines()[0] if doc.strip() else self.name

    def all_switches(self) -> dict[str, tuple[str, Any]]:
        """Return the command's switches: :data:`QUIET` when the function has ``progress``."""
        reports = "progress" in inspect.signature(resolve(self.function)).parameters
        return {**QUIET, **self.switches} if reports else dict(self.switches)

    def parser(self) -> ArgumentParser:
        """Return the command's parser: the function's and the run hook's parameters."""
        fn = resolve(self.function)
        doc = _parse_doc(fn)
        if self.run is not None:
            hook = _parse_doc(resolve(self.run)).description
            doc.description = "\n\n".join(t for t in (hook, doc.description) if t)
        parser = ArgumentParser(
            prog=f"dinogeo {self.name}",
            description=_description(doc, self.all_switches()),
            exit_on_error=True,
        )
        parser.add_argument("--config", action=ActionConfigFile, help="a YAML of options")
        _add_parameters(parser, fn, self, skip=0)
        if self.run is not None:
            _add_parameters(parser, resolve(self.run), self, skip=1)
        return parser

    def main(self, argv: Sequence[str]) -> int:
        """Parse ``argv`` and run the command.

        Args:
            argv: the arguments after ``dinogeo NAME``.

        Returns:
            The exit status: the run hook's, else 0.
        """
        if self.raw:
            result = resolve(self.function)(list(argv))
            return result if isinstance(result, int) and not isinstance(result, bool) else 0
        parser = self.parser()
        config = parser.parse_args(_rewrite(list(argv), parser, self.all_switches()))
        values = config.as_dict()
        values.pop("config", None)
        names = set(inspect.signature(resolve(self.function)).parameters)
        options = {k: v for k, v in values.items() if k in names}
        if self.run is None:
            result = resolve(self.function)(**options)
            return result if isinstance(result, int) and not isinstance(result, bool) else 0
        extra = {k: v for k, v in values.items() if k not in names}
        status = resolve(self.run)(options, **extra)
        return int(status or 0)


def register_command(
    name: str,
    function: str | Callable[..., Any],
    *,
    help: str = "",
    positional: Sequence[str] = (),
    aliases: Mapping[str, Sequence[str]] | None = None,
    output: str = "",
    switches: Mapping[str, tuple[str, Any]] | None = None,
    run: str | Callable[..., Any] | None = None,
    raw: bool = False,
) -> Command:
    """Register ``dinogeo NAME`` as a command running ``function`` (see :class:`Command`).

    Args:
        name: the subcommand name.
        function: the function, or ``"package.module:function"`` to import it lazily.
        help: one line for ``dinogeo --help``; give it with a lazy ``function`` so the
            listing imports nothing.
        positional: parameters taken without a flag.
        aliases: parameter -> extra option strings, e.g. ``{"window_size": ("--window",)}``.
        output: the parameter also spelled ``-o`` and ``--output`` (the command's output).
        switches: flag -> (parameter, value), e.g. ``{"--keep": ("overwrite", False)}``;
            ``-q``/``--quiet`` come with a ``progress`` parameter.
        run: optional hook ``run(options: dict, **extra) -> int`` run instead of
            ``function(**options)`` (printing a report, CLI-only options).
        raw: ``function`` takes the argument list and parses it itself (LightningCLI).

    Returns:
        The registered command (also in :data:`COMMANDS`).

    Raises:
        ValueError: ``name`` is already registered.
    """
    if name in COMMANDS:
        raise ValueError(f"dinogeo command {name!r} is already registered")
    spellings = {k: tuple(v) for k, v in (aliases or {}).items()}
    if output:
        spellings[output] = (*spellings.get(output, ()), "-o", "--output")
    command = Command(
        name,
        function,
        help=help,
        positional=tuple(positional),
        aliases=spellings,
        switches=dict(switches or {}),
        run=run,
        raw=raw,
    )
    COMMANDS[name] = command
    return command


# -- building the parser ---------------------------------------------------------------------


@dataclass
class _Doc:
    description: str
    params: dict[str, str]


def _parse_doc(fn: Callable[..., Any]) -> _Doc:
    from docstring_parser import parse

    parsed = parse(inspect.getdoc(fn) or "")
    text = "\n\n".join(t for t in (parsed.short_description, parsed.long_description) if t)
    params = {p.arg_name: " ".join(p.description.split()) for p in parsed.params if p.description}
    return _Doc(text, params)


def _description(doc: _Doc, switches: Mapping[str, tuple[str, Any]]) -> str:
    lines = [doc.description] if doc.description else []
    if switches:
        sets = ", ".join(f"{flag} sets {p}={v}" for flag, (p, v) in switches.items())
        lines.append(f"Shorthands: {sets}.")
    lines.append(
        "Every option can also come from --config FILE.yaml (keys are the option names); "
        "--print_config prints such a file."
    )
    return "\n\n".join(lines)


def _cli_type(hint: Any) -> Any:
    """Return a type jsonargparse parses from text/YAML, or None for a Python-only type.

    Paths become ``str``, sequences ``list``, mappings ``dict``; Python-only members of a union
    (a loaded model, a ``Sensor``, a ``(backbone, card)`` tuple) are dropped.
    """
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        kept: list[Any] = []
        for part in typing.get_args(hint):
            t = _cli_type(part)
            if t is not None and t not in kept:
                kept.append(t)
        if not kept or kept == [type(None)]:
            return None
        merged = kept[0]
        for t in kept[1:]:
            merged = merged | t
        return merged
    if origin in (list, Sequence, Iterable) or hint is list:
        args = typing.get_args(hint)
        inner = _cli_type(args[0]) if args else str
        return None if inner is None else list[inner]  # type: ignore[valid-type]
    if origin in (dict, Mapping):
        key, value = (_cli_type(a) for a in typing.get_args(hint) or (str, str))
        return None if key is None or value is None else dict[key, value]  # type: ignore[valid-type]
    if origin is Literal:
        return hint
    if hint is Path or hint is Any:
        return str
    if hint in _SCALARS:
        return hint
    return None


def _parts(hint: Any) -> tuple[Any, ...]:
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    return typing.get_args(hint) if union else (hint,)


def _list_element(hint: Any) -> Any:
    """The element type when ``hint`` holds a list (``list[str] | str | None``), else None."""
    for part in _parts(hint):
        if typing.get_origin(part) is list:
            return typing.get_args(part)[0]
    return None


def _only_list(hint: Any) -> bool:
    """Whether ``hint`` is ``list[X]`` or ``list[X] | None`` (given as ``--opt A B C``)."""
    rest = [p for p in _parts(hint) if p is not type(None)]
    return len(rest) == 1 and typing.get_origin(rest[0]) is list


class _Opaque(type):
    def __getattr__(cls, name: str) -> Any:
        return cls


class _PythonOnly(metaclass=_Opaque):
    """Stands for a type imported only for type checking (``gpd.GeoDataFrame``): no CLI type."""


def _hints(fn: Callable[..., Any]) -> dict[str, Any]:
    """The evaluated annotations of ``fn``; names imported only for type checking become Any."""
    try:
        return typing.get_type_hints(fn)
    except NameError:
        pass

    class _Names(dict[str, Any]):
        def __missing__(self, key: str) -> Any:
            return getattr(builtins, key, _PythonOnly)

    names = _Names(getattr(fn, "__globals__", {}))
    return {
        name: eval(ann, {}, names) if isinstance(ann, str) else ann  # noqa: S307
        for name, ann in inspect.get_annotations(fn).items()
    }


def _add_parameters(
    parser: ArgumentParser, fn: Callable[..., Any], command: Command, *, skip: int
) -> None:
    """Add one option (or positional argument) per parameter of ``fn`` after the first ``skip``."""
    doc = _parse_doc(fn)
    hints = _hints(fn)
    params = list(inspect.signature(fn).parameters.values())[skip:]
    for param in params:
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        hint = _cli_type(hints.get(param.name, Any))
        if hint is None:
            raise TypeError(
                f"{command.name}: parameter {param.name!r} of {fn.__qualname__} has no "
                f"command-line type ({hints.get(param.name)}); add str to its annotation"
            )
        required = param.default is inspect.Parameter.empty
        kwargs: dict[str, Any] = {"help": doc.params.get(param.name, "")}
        if not required:
            kwargs["default"] = param.default
        element = _list_element(hint)
        if param.name in command.positional:
            if element is not None:
                kwargs.update(type=element, nargs="+" if required else "*")
            else:
                kwargs.update(type=hint, nargs=None if required else "?")
            parser.add_argument(param.name, **kwargs)
            continue
        names = [f"--{param.name}"]
        if "_" in param.name:
            names.append(f"--{param.name.replace('_', '-')}")
        names = list(dict.fromkeys([*names, *command.aliases.get(param.name, ())]))
        kwargs.update(type=hint, required=required)
        if _is_bool(hint):
            kwargs.update(nargs="?", const=True)
        elif _only_list(hint):
            kwargs.update(type=element, nargs="+")
        parser.add_argument(*names, **kwargs)


def _is_bool(hint: Any) -> bool:
    args = set(typing.get_args(hint)) if typing.get_origin(hint) else {hint}
    return bool in args and args <= {bool, type(None)}


_WORDS = {"true", "false", "yes", "no", "null", "on", "off"}


def _rewrite(argv: list[str], parser: ArgumentParser, switches: Mapping[str, Any]) -> list[str]:
    """Spell switches, bare boolean flags and ``--no-FLAG`` as ``--param=value``.

    A bare ``--flag`` then never swallows the positional argument after it.
    """
    booleans = {
        s
        for a in parser._actions
        for s in a.option_strings
        if s.startswith("-") and getattr(a, "const", None) is True
    }
    out = []
    for i, arg in enumerate(argv):
        after = argv[i + 1].lower() if i + 1 < len(argv) else None
        if arg in switches:
            param, value = switches[arg]
            out.append(f"--{param}={_yaml(value)}")
        elif arg in booleans and after not in _WORDS:
            out.append(f"{arg}=true")
        elif arg.startswith(("--no-", "--no_")) and "--" + arg[5:] in booleans:
            out.append(f"--{arg[5:]}=false")
        else:
            out.append(arg)
    return out


def _yaml(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
