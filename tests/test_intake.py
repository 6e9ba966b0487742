"""From submitted files to code cells: validation, test-cell exclusion, IPython syntax, class archives."""

import json
import os
import stat
import zipfile

import nbformat
import pytest

from autograder.grading import archive as archive_module
from autograder.grading.archive import ArchiveError, unpacked
from autograder.grading.discover import DiscoveryError, discover, student_id
from autograder.grading.intake import AutogradedCells, InvalidSubmission, code_cells, read_notebook

TEST_CELL_META = {"nbgrader": {"grade": True, "solution": False, "grade_id": "linear", "points": 2}}


def notebook(*cells, language="python"):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "k", "display_name": "k", "language": language}
    nb.cells = list(cells)
    return nb


def test_test_cells_are_excluded_by_metadata_and_by_source():
    """Are autograder test cells left out even when the student strips their metadata?"""
    released = notebook(nbformat.v4.new_code_cell('check("linear")', metadata=TEST_CELL_META))
    tests = AutogradedCells.from_notebook(released)
    submitted = notebook(
        nbformat.v4.new_code_cell("x = 1"),
        nbformat.v4.new_code_cell('check("linear")', metadata=TEST_CELL_META),
        nbformat.v4.new_code_cell('  check("linear")  \n'),
        nbformat.v4.new_markdown_cell("texto"),
        nbformat.v4.new_code_cell("y = 2"),
    )
    cells = code_cells(submitted, tests=tests)
    assert [c.index for c in cells] == [1, 5]
    assert [c.preview for c in cells] == ["x = 1", "y = 2"]


def test_student_cells_are_kept_in_order_with_ipython_syntax_turned_into_calls():
    """Do added cells run, with magics and shell escapes turned into calls on the shell stub?"""
    cells = code_cells(notebook(nbformat.v4.new_code_cell("%timeit f()\n!ls\nz = 3")),
                       tests=AutogradedCells(frozenset(), frozenset()))
    assert "get_ipython().run_line_magic('timeit', 'f()')" in cells[0].source
    assert "get_ipython().system('ls')" in cells[0].source


@pytest.mark.parametrize("content, message", [
    (b"", "vacío"),
    (b"\x89PNG\r\n\x1a\n\x00\x00garbage", "UTF-8"),
    (b'{"cells": [', "incompleto o dañado"),
    (b'{"hello": "world"}', "no es un notebook"),
    (b'[1, 2, 3]', "no es un notebook"),
    (b'{"nbformat": 4, "cells": "nope"}', "lista de celdas"),
], ids=["empty", "binary", "truncated-json", "json-not-notebook", "json-list", "cells-not-list"])
def test_malformed_files_give_a_message_a_student_understands(tmp_path, content, message):
    """Does each kind of broken file become a clear Spanish message instead of a crash?"""
    path = tmp_path / "nb.ipynb"
    path.write_bytes(content)
    with pytest.raises(InvalidSubmission, match=message):
        read_notebook(path, max_bytes=2**20)


def test_oversized_files_are_refused_before_reading(tmp_path):
    """Is a file over the size limit refused with the limit stated?"""
    path = tmp_path / "big.ipynb"
    path.write_bytes(b" " * 2048)
    with pytest.raises(InvalidSubmission, match="máximo"):
        read_notebook(path, max_bytes=1024)


def test_non_python_kernels_are_refused(tmp_path):
    """Is a notebook written for another language refused with the kernel named?"""
    path = tmp_path / "r.ipynb"
    nbformat.write(notebook(nbformat.v4.new_code_cell("x <- 1"), language="R"), path)
    with pytest.raises(InvalidSubmission, match="kernel de R"):
        read_notebook(path, max_bytes=2**20)


def test_nbformat_3_notebooks_are_converted(tmp_path):
    """Is an old nbformat 3 notebook read and its code cells found?"""
    v3 = {"nbformat": 3, "nbformat_minor": 0, "metadata": {},
          "worksheets": [{"cells": [{"cell_type": "code", "input": "x = 41 + 1", "outputs": [],
                                     "language": "python", "metadata": {}}]}]}
    path = tmp_path / "old.ipynb"
    path.write_text(json.dumps(v3))
    cells = code_cells(read_notebook(path, max_bytes=2**20), tests=AutogradedCells(frozenset(), frozenset()))
    assert cells[0].source.strip() == "x = 41 + 1"


def test_student_ids_are_file_system_safe():
    """Can a file name never become a path outside the output folder?"""
    assert student_id("../../etc/passwd") == "etc_passwd"
    assert student_id("María José") == "Mar_a_Jos"
    assert student_id("...") == "student"


def test_discovery_understands_files_folders_and_nbgrader_trees(tmp_path):
    """Are students named by the nbgrader tree when there is one, else by the notebook file?"""
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "ana.ipynb").write_text("{}")
    tree = tmp_path / "submitted"
    (tree / "bob" / "u1").mkdir(parents=True)
    (tree / "bob" / "u1" / "u1.ipynb").write_text("{}")
    (tree / "bob" / "u1" / "scratch.ipynb").write_text("{}")
    (tree / "carla" / "u1").mkdir(parents=True)
    (tree / "carla" / "u1" / "otro.ipynb").write_text("{}")
    (tree / "dani" / "u1").mkdir(parents=True)
    (tree / "eva" / "u1").mkdir(parents=True)
    (tree / "eva" / "u1" / "a.ipynb").write_text("{}")
    (tree / "eva" / "u1" / "b.ipynb").write_text("{}")
    found = {s.student: s for s in discover([tmp_path / "flat", tree], assignment="u1", notebook_name="u1.ipynb")}
    assert found["ana"].path.name == "ana.ipynb"
    assert found["bob"].path.name == "u1.ipynb"
    assert found["carla"].path.name == "otro.ipynb"
    assert found["dani"].path is None and "ningún notebook" in found["dani"].problem
    assert found["eva"].path is None and "varios notebooks" in found["eva"].problem


def test_two_submissions_for_one_student_id_stop_discovery(tmp_path):
    """Is an ambiguous student id an error for the TA rather than a silently lost submission?"""
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "same.ipynb").write_text("{}")
    with pytest.raises(DiscoveryError, match="same"):
        discover([tmp_path / "a", tmp_path / "b"], assignment="u1", notebook_name="u1.ipynb")


def zip_with(path, entries):
    """A zip at `path` with (name, bytes) entries; a name may be a ZipInfo."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries:
            zf.writestr(name, data)
    return path


@pytest.mark.parametrize("name", ["../escape.ipynb", "/etc/evil.ipynb", "a/../../escape.ipynb",
                                  "..\\windows.ipynb", "C:/evil.ipynb"])
def test_archives_that_write_outside_their_folder_are_refused(tmp_path, name):
    """Is an entry with an absolute path or `..` refused, naming the entry, with nothing written outside?"""
    archive = zip_with(tmp_path / "class.zip", [("ok/demo.ipynb", "{}"), (name, "{}")])
    with pytest.raises(ArchiveError, match="path traversal"):
        with unpacked([archive]):
            pass
    assert not (tmp_path / "escape.ipynb").exists()


def test_archives_with_links_are_refused(tmp_path):
    """Is a symbolic link inside the archive refused (it could point anywhere)?"""
    link = zipfile.ZipInfo("student/demo.ipynb")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    archive = zip_with(tmp_path / "class.zip", [(link, "/etc/passwd")])
    with pytest.raises(ArchiveError, match="symbolic link"):
        with unpacked([archive]):
            pass


def test_decompression_bombs_are_refused(tmp_path):
    """Is an entry that expands far beyond its compressed size stopped while unpacking?"""
    archive = zip_with(tmp_path / "bomb.zip", [("student/demo.ipynb", b"\0" * (64 * 2**20))])
    assert archive.stat().st_size < 2**20
    with pytest.raises(ArchiveError, match="decompression bomb"):
        with unpacked([archive]):
            pass


def test_an_archive_that_lies_about_sizes_is_still_bounded(tmp_path, monkeypatch):
    """Are sizes counted while copying, so a forged directory cannot get past the archive's limit?"""
    monkeypatch.setattr(archive_module, "MAX_TOTAL_BYTES", 3 * 2**20)
    archive = zip_with(tmp_path / "class.zip", [(f"s{i}/demo.ipynb", os.urandom(2**20)) for i in range(4)])
    with pytest.raises(ArchiveError, match="size limit"):
        with unpacked([archive]):
            pass


def test_an_lms_export_is_unwrapped_and_each_student_folder_found(tmp_path):
    """Are wrapper folders skipped and one submission found per student folder, notebook at any depth?"""
    archive = zip_with(tmp_path / "export.zip", [
        ("Tarea 1/Ana_1/u1.ipynb", "{}"), ("Tarea 1/Beto_2/sub/dir/otro.ipynb", "{}"),
        ("Tarea 1/Caro_3/tarea.py", "x = 1"), ("__MACOSX/._junk", "x")])
    with unpacked([archive]) as paths:
        found = discover(paths, assignment="u1", notebook_name="u1.ipynb")
        assert [(s.student, s.path.name if s.path else None) for s in found] == [
            ("Ana_1", "u1.ipynb"), ("Beto_2", "otro.ipynb"), ("Caro_3", None)]
        assert "tarea.py" in found[2].problem
    assert not paths[0].exists()  # unpacked files are removed afterwards


def test_loose_files_that_are_not_notebooks_get_a_problem_not_silence(tmp_path):
    """Does a `.py` handed in among notebooks become that student's submission with a clear problem?"""
    (tmp_path / "ana.ipynb").write_text("{}")
    (tmp_path / "beto.py").write_text("x = 1")
    (tmp_path / "notes.md").write_text("ignored")
    found = {s.student: s for s in discover([tmp_path], assignment="u1", notebook_name="u1.ipynb")}
    assert set(found) == {"ana", "beto"}
    assert found["beto"].path is None and ".py" in found["beto"].problem
