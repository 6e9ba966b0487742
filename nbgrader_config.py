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
