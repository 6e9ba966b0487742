"""From the paths a TA passes to the list of submissions to grade, one per student.

A path is a notebook, a folder of notebooks (one student per notebook, named by
the file), a folder of student folders (as an LMS export unpacks; named by the
folder, notebook found at any depth), or an nbgrader `submitted/` tree
(`<student>/<assignment>/*.ipynb`, named by the folder). Class `.zip` archives are
unpacked first (`archive.unpacked`). A student without a usable notebook (a `.py`,
a nested `.zip`, an empty folder, several notebooks) still yields a submission with
the problem stated, so that student gets a result too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

_UNSAFE = re.compile(r"[^A-Za-z0-9._@+-]+")


class DiscoveryError(Exception):
    """The paths cannot be turned into a list of submissions (for TAs, English)."""


@dataclass(frozen=True)
class Submission:
    student: str
    path: Path | None
    problem: str | None = None  # set when there is nothing gradable; Spanish, for the student


def student_id(name: str) -> str:
    """A file-system-safe student id."""
    cleaned = _UNSAFE.sub("_", name).strip("._") or "student"
    return cleaned[:100]


def discover(paths: list[Path], *, assignment: str, notebook_name: str) -> list[Submission]:
    found: list[Submission] = []
    for path in paths:
        if path.is_file():
            found.append(_from_file(path))
        elif path.is_dir():
            found += _from_directory(path, assignment=assignment, notebook_name=notebook_name)
        else:
            raise DiscoveryError(f"{path} does not exist")
    seen: dict[str, Submission] = {}
    for submission in found:
        if submission.student in seen:
            raise DiscoveryError(
                f"two submissions map to student id {submission.student!r}: "
                f"{seen[submission.student].path} and {submission.path}"
            )
        seen[submission.student] = submission
    return sorted(found, key=lambda s: s.student)


#: Files in a folder of submissions that are taken as some student's (wrong) submission.
WRONG_KINDS = {".py": "un script de Python (.py)", ".zip": "un archivo comprimido (.zip)",
               ".html": "una página HTML", ".pdf": "un PDF", ".txt": "un archivo de texto"}


def _from_file(path: Path) -> Submission:
    sid = student_id(path.stem)
    if path.suffix.lower() == ".ipynb":
        return Submission(sid, path)
    kind = WRONG_KINDS.get(path.suffix.lower(), f"un archivo `{path.suffix or 'sin extensión'}`")
    return Submission(sid, None, problem=f"Entregaste {kind} en lugar del notebook de Jupyter (.ipynb). "
                                         "Descárgalo desde Jupyter (File → Download) y entrégalo tal cual.")


def _visible(path: Path) -> bool:
    return not path.name.startswith((".", "__MACOSX"))


def _from_directory(directory: Path, *, assignment: str, notebook_name: str) -> list[Submission]:
    entries = [p for p in sorted(directory.iterdir()) if _visible(p)]
    tree = [d for d in entries if d.is_dir() and (d / assignment).is_dir()]
    if tree:
        return [_pick(d.name, d / assignment, notebook_name) for d in tree]
    files = [p for p in entries if p.is_file() and (p.suffix.lower() == ".ipynb" or p.suffix.lower() in WRONG_KINDS)]
    if any(p.suffix.lower() == ".ipynb" for p in files):
        return [_from_file(p) for p in files]
    folders = [d for d in entries if d.is_dir()]
    return [_pick(d.name, d, notebook_name) for d in folders] + [_from_file(p) for p in files]


def _pick(student: str, folder: Path, notebook_name: str) -> Submission:
    """The student's notebook in their folder (at any depth): the released name, else the only one."""
    sid = student_id(student)
    notebooks = sorted(p for p in folder.rglob("*.ipynb")
                       if p.is_file() and all(_visible(Path(part)) for part in p.relative_to(folder).parts))
    named = [p for p in notebooks if p.name == notebook_name]
    if len(named) == 1:
        return Submission(sid, named[0])
    if len(notebooks) == 1:
        return Submission(sid, notebooks[0])
    if not notebooks:
        others = sorted(p.name for p in folder.rglob("*") if p.is_file())[:5]
        seen = f" (contiene: {', '.join(others)})" if others else ""
        return Submission(sid, None, problem=f"La entrega no contiene ningún notebook{seen}; "
                                             f"se esperaba `{notebook_name}`.")
    names = ", ".join(str(p.relative_to(folder)) for p in notebooks[:10])
    return Submission(sid, None, problem=(
        f"La entrega contiene varios notebooks ({names}) y no uno solo llamado `{notebook_name}`; "
        "no sabemos cuál corregir. Entrega solo el notebook de la tarea."))


def submission_in(folder: Path, *, student: str, notebook_name: str) -> Submission:
    """The one submission in `folder` (a student's upload, e.g. Gradescope's /autograder/submission):
    the notebook at any depth, picked as for a folder of student folders. A notebook reached through a
    link, or lying outside `folder`, is refused: the grader reads it with its own rights."""
    sid = student_id(student)
    if not folder.is_dir():
        return Submission(sid, None, problem=f"No se recibió ninguna entrega; se esperaba `{notebook_name}`.")
    found = _pick(student, folder, notebook_name)
    if found.path is not None:
        real = found.path.resolve()
        if found.path.is_symlink() or real != folder.resolve() / found.path.relative_to(folder):
            return Submission(sid, None, problem=f"`{found.path.name}` es un enlace simbólico, no un notebook. "
                                                 "Entrega el archivo .ipynb tal cual.")
    return found
