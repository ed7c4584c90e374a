"""``dinogeo demo``: the summary printed after :func:`dinogeo.demo.run_demo`."""

from __future__ import annotations

from typing import Any

from dinogeo.demo import run_demo

__all__ = ["run"]


def run(options: dict[str, Any]) -> int:
    """Run the demo and print what it wrote and measured.

    Args:
        options: the keyword arguments of :func:`~dinogeo.demo.run_demo`.

    Returns:
        The exit status (0).
    """
    print(run_demo(**options).summary())
    return 0
