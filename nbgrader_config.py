"""nbgrader settings of the course (nbgrader reads this file; `autograder build` runs nbgrader here)."""

from nbgrader.preprocessors import ClearHiddenTests, ClearMarkScheme, ClearOutput, IncludeHeaderFooter, LockCells

c = get_config()  # noqa: F821  (provided by traitlets when nbgrader loads this file)

c.CourseDirectory.course_id = "datitos-aprendizaje-profundo-2021"
c.CourseDirectory.solution_directory = "solutions"

# What students see where a solution was removed (Spanish, like the rest of the notebook).
c.ClearSolutions.code_stub = {"python": "# TU CÓDIGO AQUÍ\nraise NotImplementedError()"}
c.ClearSolutions.text_stub = "ESCRIBE TU RESPUESTA AQUÍ"

# Solutions are published as written: hidden tests removed, nothing executed (deterministic output).
c.GenerateSolution.preprocessors = [IncludeHeaderFooter, LockCells, ClearOutput, ClearMarkScheme, ClearHiddenTests]

# `nbgrader autograde`, formgrader's Autograde button and `nbgrader generate_feedback` go through the
# isolated grader: no submission ever runs in a kernel on this machine, and feedback never shows hidden checks.
from autograder.nbgrader_bridge.settings import use_isolated_grader  # noqa: E402

use_isolated_grader(c)

# Students outside a course checkout (Colab, Kaggle, a laptop) get the public checks from one wheel that
# `autograder build` writes to release/dist/; the setup cell of every notebook installs it from
# <url>/<wheel file name>. This is the one place to set where it is published: with the course repository
# public on GitHub, the raw URL of its release/dist/ folder publishes each wheel as it is pushed.
from autograder.runtime_package import use_student_runtime  # noqa: E402

c.StudentRuntime.url = "https://raw.githubusercontent.com/datitos/aprendizaje-profundo/main/release/dist"
use_student_runtime(c)  # nbgrader writes <url>/<wheel> into the released setup cells
