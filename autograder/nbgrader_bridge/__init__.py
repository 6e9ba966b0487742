"""nbgrader's own tools on top of the isolated grader.

- `annotate`: a submission notebook with each test cell's output replaced by our check
  report and its score (the form nbgrader's `SaveAutoGrades` reads), and each code cell's
  output as it ran in the sandbox;
- `preprocessor.IsolatedGrade`: replaces nbgrader's `Execute` in `nbgrader autograde` and
  formgrader's Autograde button: no kernel on the host, our worker instead;
- `exporter.FeedbackExporter`: `nbgrader generate_feedback` writes our leak-free HTML page;
- `record`: `autograder grade` records a batch in the gradebook through nbgrader's API.
"""
