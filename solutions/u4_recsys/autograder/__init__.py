"""Datitos autograder: build, self-check and grade deep-learning notebooks.

This module is copied into every student release, so it must stay import-light.
"""

__version__ = "0.1.0"
