"""`FeedbackExporter`: what `nbgrader generate_feedback` writes with the course's configuration.

nbgrader's own feedback is the autograded notebook through its HTML template (hidden
test cells and their tracebacks included, MathJax from a CDN). With
`GenerateFeedback.exporter_class` set to this class it writes our page instead: the
annotated notebook (hidden checks by title and outcome only), scores from the gradebook
as nbgrader's `GetGrades` put them (manual grades and the late penalty included).
"""

from __future__ import annotations

from nbconvert.exporters import Exporter
from traitlets import default

from ..feedbackpage.page import PageInfo, render_feedback


class FeedbackExporter(Exporter):
    output_mimetype = "text/html"

    @default("file_extension")
    def _file_extension_default(self) -> str:
        return ".html"

    def from_notebook_node(self, nb, resources=None, **kw):
        nb, resources = super().from_notebook_node(nb, resources, **kw)  # runs GetGrades
        info = resources.get("nbgrader", {})
        page = render_feedback(nb, info=PageInfo(
            student=str(info.get("student", "")), assignment=str(info.get("assignment", "")),
            score=float(info.get("score", 0) or 0), max_score=float(info.get("max_score", 0) or 0),
            late_penalty=float(info.get("late_penalty", 0) or 0)))
        return page, resources
