"""docs/architecture.md names every module of the package, in its folder's entry."""

from __future__ import annotations

import re
from pathlib import Path

import dinogeo

PACKAGE = Path(dinogeo.__file__).resolve().parent
DOC = PACKAGE.parent / "docs" / "architecture.md"


def entries() -> dict[str, str]:
    """The entries of the module map: ``"data/"`` or ``"samples.py"`` -> its text."""
    text = DOC.read_text()
    block = text.split("## Modules", 1)[1].split("```", 2)[1]
    found: dict[str, str] = {}
    key = None
    for line in block.splitlines():
        top = re.match(r"^  (\S+)", line)
        if top:
            key = top.group(1)
            found[key] = line[len(key) + 2 :]
        elif key is not None and line.startswith("   "):
            found[key] += " " + line.strip()
        else:
            key = None
    return found


def test_every_module_is_named_in_its_folder():
    listed = entries()
    missing = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if rel.name == "__init__.py" and len(rel.parts) > 1:
            continue
        if len(rel.parts) == 1:
            if rel.name not in listed:
                missing.append(str(rel))
            continue
        folder = "/".join(rel.parts[:-1]) + "/"
        if not re.search(rf"(?<![\w/]){re.escape(rel.name)}\b", listed.get(folder, "")):
            missing.append(str(rel))
    assert missing == [], f"add these modules to docs/architecture.md (## Modules): {missing}"


def test_the_doc_names_no_module_that_is_gone():
    listed = entries()
    gone = []
    for key, text in listed.items():
        if not key.endswith("/") or not (PACKAGE / key).is_dir():
            continue
        for name in re.findall(r"(?<![\w/.])(\w+\.py)\b", text):
            if not (PACKAGE / key / name).is_file():
                gone.append(f"{key}{name}")
    assert gone == []


def test_the_layer_picture_covers_every_package():
    text = DOC.read_text().split("## Layers", 1)[1].split("## Modules", 1)[0]
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert all(re.search(rf"\b{name}\b", text) for name in packages), packages
