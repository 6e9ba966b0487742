"""From a submitted file to the Python code to run: read, validate, extract, transform.

Every problem becomes `InvalidSubmission` with a message the student understands;
the grader turns it into a zero-score result instead of crashing the batch.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

from .session import Cell


class InvalidSubmission(Exception):
    """The submission cannot be graded; the message is for the student (Spanish)."""


@dataclass(frozen=True)
class AutogradedCells:
    """How to recognise the autograder test cells of the released notebook."""

    grade_ids: frozenset[str]
    sources: frozenset[str]

    @classmethod
    def from_notebook(cls, notebook: dict) -> "AutogradedCells":
        ids, sources = set(), set()
        for cell in notebook.get("cells", []):
            if is_test_cell_metadata(cell):
                ids.add(cell["metadata"]["nbgrader"].get("grade_id", ""))
                sources.add(normalise(cell_source(cell)))
        return cls(frozenset(ids), frozenset(sources))

    def matches(self, cell: dict) -> bool:
        return is_test_cell_metadata(cell) or normalise(cell_source(cell)) in self.sources


def is_test_cell_metadata(cell: dict) -> bool:
    meta = cell.get("metadata", {}).get("nbgrader", {}) if isinstance(cell.get("metadata"), dict) else {}
    return isinstance(meta, dict) and meta.get("grade") is True and meta.get("solution") is not True \
        and cell.get("cell_type") == "code"


def cell_source(cell: dict) -> str:
    source = cell.get("source", "")
    if isinstance(source, list) and all(isinstance(s, str) for s in source):
        return "".join(source)
    if isinstance(source, str):
        return source
    raise InvalidSubmission("Una celda del notebook tiene un contenido inválido; ¿editaste el archivo a mano?")


def normalise(source: str) -> str:
    return "\n".join(line.rstrip() for line in source.strip().splitlines())


def read_notebook(path: Path, *, max_bytes: int) -> dict:
    """Parse and validate a notebook file (nbformat 3 is converted to 4)."""
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise InvalidSubmission(
                f"El notebook pesa {size / 2**20:.1f} MB y el máximo es {max_bytes / 2**20:.0f} MB. "
                "Borra las salidas (Kernel → Restart & Clear Output) y vuelve a entregarlo."
            )
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidSubmission(f"No se pudo leer el archivo entregado ({exc.strerror}).") from None
    if not data.strip():
        raise InvalidSubmission("El archivo entregado está vacío.")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidSubmission(
            "El archivo no es texto UTF-8 válido; ¿es realmente un notebook de Jupyter (.ipynb)?"
        ) from None
    try:
        notebook = json.loads(text)
    except (ValueError, RecursionError) as exc:
        where = f" (línea {exc.lineno})" if hasattr(exc, "lineno") else ""
        raise InvalidSubmission(
            f"El archivo no es un notebook válido: su contenido JSON está incompleto o dañado{where}. "
            "Descárgalo de nuevo desde Jupyter (File → Download) y vuelve a entregarlo."
        ) from None
    if not isinstance(notebook, dict) or "nbformat" not in notebook or not isinstance(notebook.get("nbformat"), int):
        raise InvalidSubmission("El archivo es JSON, pero no es un notebook de Jupyter.")
    if notebook["nbformat"] < 4:
        notebook = _upgrade(notebook)
    if not isinstance(notebook.get("cells"), list) or not all(isinstance(c, dict) for c in notebook["cells"]):
        raise InvalidSubmission("El notebook no tiene una lista de celdas válida.")
    language = _kernel_language(notebook)
    if language and language.lower() != "python":
        raise InvalidSubmission(
            f"El notebook usa un kernel de {language}; este curso se corrige con Python 3. "
            "Cambia el kernel (Kernel → Change kernel) y vuelve a entregarlo."
        )
    return notebook


def _upgrade(notebook: dict) -> dict:
    import nbformat

    try:
        return json.loads(nbformat.writes(nbformat.convert(nbformat.from_dict(notebook), 4)))
    except Exception:
        raise InvalidSubmission(
            "El notebook tiene un formato antiguo (nbformat 3) que no se pudo convertir. "
            "Ábrelo y guárdalo con una versión actual de Jupyter."
        ) from None


def _kernel_language(notebook: dict) -> str | None:
    metadata = notebook.get("metadata")
    if not isinstance(metadata, dict):
        return None
    for key in ("kernelspec", "language_info"):
        section = metadata.get(key)
        if isinstance(section, dict) and isinstance(section.get("language"), str):
            return section["language"]
    return None


#: No real cell comes near this; IPython's transformer re-reads a cell once per magic line.
MAX_TRANSFORMED_CELL = 100_000
MAX_CODE = 5_000_000


def code_cells(notebook: dict, *, tests: AutogradedCells) -> list[Cell]:
    """Every code cell in notebook order except the autograder test cells, as Python."""
    cells = []
    total = 0
    for position, cell in enumerate(notebook["cells"], start=1):
        if cell.get("cell_type") != "code" or tests.matches(cell):
            continue
        source = cell_source(cell)
        total += len(source)
        if total > MAX_CODE:
            raise InvalidSubmission(f"El notebook tiene más de {MAX_CODE // 10**6} millones de caracteres de "
                                    "código; entrega solo tu solución.")
        python = python_source(source) if len(source) <= MAX_TRANSFORMED_CELL else source
        cells.append(Cell(index=position, source=python, preview=first_line(source)))
    return cells


def first_line(source: str, limit: int = 60) -> str:
    """The first non-blank line of a cell, shortened: how a student recognises the cell."""
    line = next((line.strip() for line in source.splitlines() if line.strip()), "")
    return line if len(line) <= limit else line[: limit - 1] + "…"


_transformer = None


@functools.lru_cache(maxsize=4096)
def python_source(source: str) -> str:
    """IPython syntax (magics, `!shell`) to Python calls on the worker's shell stub. Cached: a class's notebooks
    share most of their cells."""
    global _transformer
    if _transformer is None:
        from IPython.core.inputtransformer2 import TransformerManager

        _transformer = TransformerManager()
    try:
        return _transformer.transform_cell(source)
    except Exception:  # leave it to the worker: compiling reports the error in the student's cell
        return source
