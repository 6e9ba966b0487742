"""Put the student-runtime install block at the top of a source notebook's setup cell.

The setup cell (nbgrader grade_id "setup") then imports `make_check` and, where that fails
(Colab, Kaggle, a laptop without the course checkout), installs the course's runtime wheel
with the kernel's `%pip` (`autograder.runtime_package.INSTALL_BLOCK`; `autograder build`
puts the wheel's URL in the released notebooks). The cell's own
`from autograder.selfcheck import make_check` line goes (the block does that import); every
other cell stays byte for byte. Running it again changes nothing.

    .venv/bin/python scripts/add_runtime_install.py source/*/*.ipynb
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import nbformat

from autograder.runtime_package import INSTALL_BLOCK, URL_PLACEHOLDER

IMPORT_LINE = "from autograder.selfcheck import make_check"


def with_install_block(source: str) -> str:
    """The setup cell's source with the install block on top and its own `make_check` import removed."""
    if URL_PLACEHOLDER in source:
        return source
    lines = [line for line in source.splitlines() if line.strip() != IMPORT_LINE]
    rest = "\n".join(lines).strip("\n")
    while "\n\n\n" in rest:  # the removed import may leave two blank lines in a row
        rest = rest.replace("\n\n\n", "\n\n")
    return INSTALL_BLOCK + "\n" + rest


def update(path: Path) -> bool:
    """Rewrite the setup cell of `path` in place; True if it changed."""
    nb = nbformat.read(path, as_version=4)
    setup = [c for c in nb.cells if c.cell_type == "code" and c.metadata.get("nbgrader", {}).get("grade_id") == "setup"]
    if len(setup) != 1 or IMPORT_LINE not in setup[0].source and URL_PLACEHOLDER not in setup[0].source:
        raise SystemExit(f"{path}: no setup cell (grade_id 'setup') that imports make_check")
    cell = setup[0]
    new = with_install_block(cell.source)
    if new == cell.source:
        return False
    others = [json.dumps(c, sort_keys=True) for c in nb.cells if c is not cell]
    cell.source = new
    assert others == [json.dumps(c, sort_keys=True) for c in nb.cells if c is not cell]
    nbformat.write(nb, path)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="+", type=Path)
    for path in parser.parse_args().notebooks:
        print(f"{path}: {'updated' if update(path) else 'already has the install block'}")


if __name__ == "__main__":
    main()
