"""`IsolatedGrade`: nbgrader's autograde step, run by our isolated grader instead of a kernel on the host.

The course's `nbgrader_config.py` puts it where nbgrader's `Execute` was in
`Autograde.autograde_preprocessors`, so `nbgrader autograde` and formgrader's Autograde
button never execute a submission in a host kernel. For each notebook it takes the
result of the submitted file from the results folder when that result graded these
very bytes with the current checks (what `autograder grade` just wrote; read directly, so a
class costs one file read per student), and grades the file in an isolated worker otherwise. Then it writes the result into the test cells'
outputs (`annotate.annotate_notebook`), where nbgrader's `SaveAutoGrades` reads it.
"""

from __future__ import annotations

import random
from pathlib import Path

from nbgrader.coursedir import CourseDirectory
from nbgrader.preprocessors import NbGraderPreprocessor
from traitlets import Bool, Int, List, Unicode

from ..course import Course
from ..grading.discover import Submission, student_id
from ..grading.isolation import MODES
from .annotate import annotate_notebook


class IsolatedGrade(NbGraderPreprocessor):
    results_dir = Unicode(
        "", help="folder of result files (default: <course root>/autograded/<assignment>, as `autograder grade`)"
    ).tag(config=True)
    sandbox = Unicode("auto", help=f"sandbox mode when a notebook must be graded here: one of {', '.join(MODES)}"
                      ).tag(config=True)
    seed = Int(-1, help="seed of the checks' random inputs (-1: a fresh one per notebook)").tag(config=True)
    devices = List(Unicode(), ["cpu", "cuda"], help="devices checks may run on").tag(config=True)
    keep_grader_errors = Bool(False, help="take a stored grader-error result as it is instead of grading again "
                              "(`autograder grade` sets it: its batch has just graded every notebook)").tag(config=True)

    def preprocess(self, nb, resources):
        info = resources["nbgrader"]
        coursedir = self._coursedir()
        course = Course(Path(coursedir.root).resolve())
        assignment = info["assignment"]
        submitted = Path(coursedir.format_path(coursedir.submitted_directory, info["student"], assignment)) \
            / f"{info['notebook']}.ipynb"
        out = Path(self.results_dir) if self.results_dir else course.root / "autograded" / assignment
        result = self._result(course, assignment, Submission(student_id(info["student"]), submitted), out)
        self.log.info("Isolated grader: %s scored %g of %g", info["student"], result["score"], result["max_score"])
        return annotate_notebook(nb, result), resources

    def _coursedir(self) -> CourseDirectory:
        parent = self.parent
        while parent is not None:
            if isinstance(getattr(parent, "coursedir", None), CourseDirectory):
                return parent.coursedir
            parent = getattr(parent, "parent", None)
        return CourseDirectory(config=self.config)

    def _result(self, course: Course, assignment: str, submission: Submission, out: Path) -> dict:
        from ..grading.batch import grade_batch
        from ..grading.options import GradeOptions
        from ..grading.store import FINISHED, assignment_digest, fingerprint, stored_result

        grading = assignment_digest(course.assignment(assignment), public_only=False)
        statuses = (*FINISHED, "error") if self.keep_grader_errors else FINISHED
        stored = stored_result(out, submission.student, fingerprint(submission.path, None, grading=grading),
                               statuses=statuses)
        if stored is not None:
            return stored
        seed = self.seed if self.seed >= 0 else random.SystemRandom().randrange(2**31)
        options = GradeOptions(seed=seed, devices=tuple(self.devices), sandbox=self.sandbox)
        report = grade_batch(course=course, assignment=assignment, submissions=[submission], out_dir=out,
                             workers=1, options=options.to_dict(), progress=False)
        return report.results[submission.student]
