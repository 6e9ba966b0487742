"""Who handed in the same code: MOSS-style winnowing over normalised graded code, per part.

`similarity_report` is the entry point (the `autograder similarity` command wraps it);
the steps live in `extract`, `normalize`, `winnow`, `index` and `page`.
"""

from .report import PairMatch, PartMatch, Settings, SimilarityReport, similarity_report

__all__ = ["PairMatch", "PartMatch", "Settings", "SimilarityReport", "similarity_report"]
