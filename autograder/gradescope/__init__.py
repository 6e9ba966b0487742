"""Gradescope: a zip that Gradescope's autograder accepts, and what its `run_autograder` runs.

- `bundle.write_bundle` writes the zip (`autograder gradescope ASSIGNMENT`): `setup.sh` and
  `run_autograder` at its root, the engine with the assignment's checks, the release notebook
  and a requirements file.
- `run.main` is what `run_autograder` calls in Gradescope's container: it finds the notebook
  under /autograder/submission, grades it with the isolated worker (student code as an
  unprivileged uid) and always writes /autograder/results/results.json.
- `results.to_gradescope` maps one of our result files to Gradescope's results.json schema.
"""
