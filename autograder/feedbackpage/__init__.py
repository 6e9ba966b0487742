"""The student's feedback page: one self-contained HTML file (no network), in Spanish."""
