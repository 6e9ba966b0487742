"""A submission notebook annotated with its result, as nbgrader and our feedback page read it.

Each autograder test cell gets two outputs: the part's check report (Markdown, public
checks in detail, hidden checks by title and outcome) and an `execute_result` holding
the part's score, which nbgrader's `determine_grade` reads as partial credit. Every
other code cell gets what it printed and raised when it ran in the sandbox, matched by
position and first line (a notebook that does not match the graded one gets none).
"""

from __future__ import annotations

import nbformat

from ..grading.feedback import part_report, part_score
from ..grading.intake import cell_source, first_line, is_test_cell_metadata

REPORT_MIME = "text/markdown"


def annotate_notebook(nb: nbformat.NotebookNode, result: dict) -> nbformat.NotebookNode:
    """`nb` (modified in place and returned) with the result in its cells' outputs."""
    ran = {entry.get("index"): entry for entry in result.get("extra_data", {}).get("cells", [])}
    for position, cell in enumerate(nb.cells, start=1):
        if cell.cell_type != "code":
            continue
        if is_test_cell_metadata(cell):
            grade_id = cell.metadata["nbgrader"].get("grade_id", "")
            cell.outputs = test_cell_outputs(result, grade_id)
            cell.execution_count = None
            continue
        entry = ran.get(position)
        cell.outputs = _sandbox_outputs(entry) if entry and entry.get("preview") == first_line(cell_source(cell)) \
            else []
        cell.execution_count = None
    return nb


def test_cell_outputs(result: dict, grade_id: str) -> list[nbformat.NotebookNode]:
    report = part_report(result, grade_id)
    score, _ = part_score(result, grade_id)
    return [
        _output({"output_type": "display_data", "metadata": {}, "data": {REPORT_MIME: report, "text/plain": report}}),
        _output({"output_type": "execute_result", "metadata": {}, "data": {"text/plain": f"{score:g}"},
                 "execution_count": None}),
    ]


def _sandbox_outputs(entry: dict) -> list[nbformat.NotebookNode]:
    outputs = []
    if entry.get("output"):
        outputs.append(_stream(str(entry["output"])))
    if entry.get("output_dropped"):
        outputs.append(_stream(f"[… {entry['output_dropped']} bytes de salida omitidos]\n"))
    error = entry.get("error")
    if error:
        traceback = [line for line in str(error.get("traceback") or "").splitlines()]
        outputs.append(_error(str(error.get("type", entry.get("status", ""))), str(error.get("message", "")),
                              traceback))
    elif entry.get("status") not in (None, "ok"):
        outputs.append(_error(str(entry["status"]), "", []))
    return outputs


def _output(fields: dict) -> nbformat.NotebookNode:
    """An output as `nbformat.v4.new_output` makes it, without its schema check of each output (about 1 ms, two
    thirds of a feedback page's time): every field here is a string or a list of strings we made."""
    return nbformat.from_dict(fields)


def _stream(text: str) -> nbformat.NotebookNode:
    return _output({"output_type": "stream", "name": "stdout", "text": text})


def _error(ename: str, evalue: str, traceback: list[str]) -> nbformat.NotebookNode:
    return _output({"output_type": "error", "ename": ename, "evalue": evalue, "traceback": traceback})


def set_scores(nb: nbformat.NotebookNode, result: dict) -> nbformat.NotebookNode:
    """Each test cell's `score`/`points` in its nbgrader metadata, as nbgrader's `GetGrades` sets them from the
    gradebook. The notebook is the student's copy: a cell that claims points for a part the result does not
    know (metadata a student added or edited) loses that claim."""
    parts = result.get("extra_data", {}).get("grade_cells", {})
    for cell in nb.cells:
        meta = cell.get("metadata", {}).get("nbgrader")
        if not isinstance(meta, dict):
            continue
        if is_test_cell_metadata(cell) and meta.get("grade_id", "") in parts:
            meta["score"], meta["points"] = part_score(result, meta["grade_id"])
        else:
            for claim in ("grade", "task", "points", "score"):
                meta.pop(claim, None)
    return nb
