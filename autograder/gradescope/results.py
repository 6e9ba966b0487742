"""Our result file -> Gradescope's results.json.

Gradescope's schema (gradescope-autograders.readthedocs.io, "Autograder Specifications"):
top level `score`, `execution_time`, `output`, `output_format`, `test_output_format`,
`test_name_format`, `visibility`, `stdout_visibility`, `extra_data`, `tests`, `leaderboard`;
each test `score`, `max_score`, `status`, `name`, `name_format`, `number`, `output`,
`output_format`, `tags`, `visibility`, `extra_data`. Our files are close to it; this module
keeps only those keys (our top-level `max_score` goes: Gradescope takes the total from the
assignment), caps every text, and keeps a short audit record in `extra_data`, which
Gradescope stores but never shows to students.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping

from .. import __version__

TOP_KEYS = ("score", "execution_time", "output", "output_format", "test_output_format", "test_name_format",
            "visibility", "stdout_visibility", "extra_data", "tests", "leaderboard")
TEST_KEYS = ("score", "max_score", "status", "name", "name_format", "number", "output", "output_format", "tags",
             "visibility", "extra_data")
FORMATS = ("text", "html", "simple_format", "md", "ansi")
VISIBILITIES = ("hidden", "after_due_date", "after_published", "visible")

#: Hidden checks are shown once the due date has passed: their feedback is a summary that never holds
#: the check's inputs (see SECURITY.md), and students should learn why they lost points. A course that
#: wants them never shown passes "hidden".
HIDDEN_VISIBILITY = "after_due_date"

MAX_OUTPUT_CHARS = 16_000  # the submission's summary
MAX_TEST_OUTPUT_CHARS = 6_000  # one check's output
MAX_NAME_CHARS = 300
MAX_EXTRA_BYTES = 64_000  # the whole top-level extra_data, serialised
MAX_TA_DETAIL_CHARS = 8_000

ERROR_MESSAGE = ("No se pudo corregir tu entrega por un error del corrector (no es culpa de tu código). "
                 "Los docentes volverán a corregirla.")


def clip(text: object, limit: int) -> str:
    """`text` cut to at most `limit` characters, saying how much was left out (Spanish, for students)."""
    text = str(text)
    if len(text) <= limit:
        return text
    note = f"\n\n… (salida recortada: {len(text) - limit} caracteres más)"
    return text[:max(0, limit - len(note))] + note


def _number(value: object) -> float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 0.0
    return number if math.isfinite(number) else 0.0


def to_gradescope(result: Mapping, *, hidden_visibility: str = HIDDEN_VISIBILITY,
                  execution_time: float | None = None) -> dict:
    """Gradescope's results.json for one of our result files (`results.SubmissionResult.to_json`)."""
    if hidden_visibility not in VISIBILITIES:
        raise ValueError(f"unknown visibility {hidden_visibility!r} (one of {', '.join(VISIBILITIES)})")
    tests = [_test(entry, hidden_visibility=hidden_visibility, number=number)
             for entry, number in zip(result.get("tests", []), _numbers(result.get("tests", [])))]
    extra = result.get("extra_data", {}) if isinstance(result.get("extra_data"), Mapping) else {}
    seconds = execution_time if execution_time is not None else result.get("execution_time", 0)
    return {
        "score": round(_number(result.get("score")), 6),
        "execution_time": int(math.ceil(_number(seconds))),
        "output": clip(result.get("output", ""), MAX_OUTPUT_CHARS),
        "output_format": "md",
        "test_output_format": "md",
        "test_name_format": "md",
        "visibility": "visible",
        "stdout_visibility": "hidden",  # run_autograder's stdout is the grader's log, for instructors
        "extra_data": _extra(extra, max_score=_number(result.get("max_score"))),
        "tests": tests,
    }


def _numbers(tests: list) -> list[str]:
    """"part.check" numbers: grade cells in the order they first appear (by-hand rules count with their cell)."""
    parts: dict[str, int] = {}
    within: dict[str, int] = {}
    numbers = []
    for entry in tests:
        tags = entry.get("tags") or [""]
        part = str(tags[0])
        parts.setdefault(part, len(parts) + 1)
        within[part] = within.get(part, 0) + 1
        numbers.append(f"{parts[part]}.{within[part]}")
    return numbers


def _test(entry: Mapping, *, hidden_visibility: str, number: str) -> dict:
    extra = entry.get("extra_data", {}) if isinstance(entry.get("extra_data"), Mapping) else {}
    hidden = bool(extra.get("hidden")) or entry.get("visibility") not in (None, "visible")
    cases = [{"device": str(c.get("device", "")), "outcome": str(c.get("outcome", "")),
              "seconds": _number(c.get("seconds"))}
             for c in extra.get("cases", []) if isinstance(c, Mapping)]
    return {
        "score": round(_number(entry.get("score")), 6),
        "max_score": round(_number(entry.get("max_score")), 6),
        "status": "passed" if entry.get("status") == "passed" else "failed",
        "name": clip(entry.get("name", ""), MAX_NAME_CHARS),
        "name_format": "md",
        "number": number,
        "output": clip(entry.get("output", ""), MAX_TEST_OUTPUT_CHARS),
        "output_format": "md",
        "tags": [str(t) for t in entry.get("tags", [])][:10],
        "visibility": hidden_visibility if hidden else "visible",
        "extra_data": {"check": str(extra.get("check", "")), "grade_id": str(extra.get("grade_id", "")),
                       "hidden": hidden, "cases": cases},
    }


def _extra(extra: Mapping, *, max_score: float) -> dict:
    """What a TA needs to audit the run, small: no captured output, no cell sources."""
    cells = [{"index": c.get("index"), "status": c.get("status"), "seconds": round(_number(c.get("seconds")), 3),
              "error": (c.get("error") or {}).get("type", "")}
             for c in extra.get("cells", []) if isinstance(c, Mapping)]
    isolation = extra.get("isolation", {}) if isinstance(extra.get("isolation"), Mapping) else {}
    data = {
        "engine": "datitos-autograder",
        "grader_version": extra.get("grader_version", __version__),
        "assignment": extra.get("assignment", ""),
        "status": extra.get("status", ""),
        "max_score": max_score,
        "grade_cells": extra.get("grade_cells", {}),
        "isolation": {k: isolation.get(k) for k in ("mode", "tool", "layers", "missing", "notes") if k in isolation},
        "limits": extra.get("limits", {}),
        "seed": extra.get("seed"),
        "fingerprint": extra.get("fingerprint", ""),
        "worker_restarts": extra.get("worker_restarts", 0),
        "output_dropped_bytes": extra.get("output_dropped_bytes", 0),
        "cells": cells,
        "ta_detail": clip(extra.get("ta_detail", ""), MAX_TA_DETAIL_CHARS),
    }
    for key in ("cells", "ta_detail", "isolation"):  # shed the bulkiest first
        if len(json.dumps(data, ensure_ascii=False)) <= MAX_EXTRA_BYTES:
            break
        data[key] = [] if key == "cells" else ({} if key == "isolation" else "")
    return data


def failure_result(message: str, *, detail: str = "", execution_time: float = 0.0, status: str = "error") -> dict:
    """A zero-score results.json with `message` for the student (Spanish) and `detail` for TAs."""
    return {
        "score": 0.0,
        "execution_time": int(math.ceil(max(0.0, execution_time))),
        "output": clip(f"**Puntaje: 0.**\n\n{message}", MAX_OUTPUT_CHARS),
        "output_format": "md",
        "test_output_format": "md",
        "test_name_format": "md",
        "visibility": "visible",
        "stdout_visibility": "hidden",
        "extra_data": {"engine": "datitos-autograder", "grader_version": __version__, "status": status,
                       "ta_detail": clip(detail, MAX_TA_DETAIL_CHARS)},
        "tests": [],
    }


def dumps(data: Mapping) -> str:
    """The file's text: UTF-8 JSON; lone surrogates from student output become '?'."""
    unknown = set(data) - set(TOP_KEYS)
    if unknown:
        raise ValueError(f"not in Gradescope's results.json schema: {', '.join(sorted(unknown))}")
    text = json.dumps(data, ensure_ascii=False, indent=1, allow_nan=False) + "\n"
    return text.encode("utf-8", "replace").decode("utf-8")
