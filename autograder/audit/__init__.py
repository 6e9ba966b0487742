"""`autograder audit`: mutation testing of an assignment's checks.

`mutate` makes mutants of the solution notebook's graded code (one small AST change
each), `run` grades them through the real pipeline and gives each a verdict, `page`
writes the terminal report and the HTML page.
"""

from .mutate import OPERATORS, Generation, Mutant, Part, generate_mutants
from .page import format_audit, render_page
from .run import EQUIVALENTS_FILE, AuditError, AuditReport, Verdict, audit, load_equivalents

__all__ = ["OPERATORS", "EQUIVALENTS_FILE", "AuditError", "AuditReport", "Generation", "Mutant", "Part", "Verdict",
           "audit", "format_audit", "generate_mutants", "load_equivalents", "render_page"]
