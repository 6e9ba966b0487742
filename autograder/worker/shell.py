"""A stand-in for IPython's shell inside the worker.

Notebook cells are turned into Python on the trusted side (IPython's own input
transformer), so `%magic` and `!cmd` lines become calls on `get_ipython()`. Here
those calls are neutralised: shell escapes and most magics do nothing and leave a
note; `%time`/`%%time` and `%%capture` still run their code, because students
define functions and variables inside them.
"""

from __future__ import annotations

RUN_LINE_MAGICS = frozenset({"time"})
RUN_CELL_MAGICS = frozenset({"time", "capture"})


class ShellStub:
    def __init__(self, namespace: dict) -> None:
        self.namespace = namespace
        self.user_ns = namespace
        self.notes: list[str] = []

    def run_line_magic(self, name: str, line: str, _stack_depth: int = 1) -> None:
        if name in RUN_LINE_MAGICS:
            exec(compile(line, f"<%{name}>", "exec"), self.namespace)
        else:
            command = f"%{name} {line}".strip()
            self.notes.append(f"Se ignoró la línea mágica `{command}`.")

    def run_cell_magic(self, name: str, line: str, cell: str) -> None:
        if name in RUN_CELL_MAGICS:
            exec(compile(cell, f"<%%{name}>", "exec"), self.namespace)
        else:
            self.notes.append(f"Se ignoró la celda mágica `%%{name}` (su código no se ejecutó).")

    def system(self, command: str) -> None:
        self.notes.append(f"Se ignoró el comando de shell `!{command}`.")

    def getoutput(self, command: str) -> list:
        self.system(command)
        return []

    def take_notes(self) -> list[str]:
        notes, self.notes = self.notes, []
        return notes


def display(*objects: object, **kwargs: object) -> None:
    """Jupyter's `display` builtin: nothing to show while grading."""
