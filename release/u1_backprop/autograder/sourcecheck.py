"""The source side of the by-hand rules: read the submitted cells, never run them.

Two scans over the cells' Python (after IPython's transform; `%%time` bodies included):

* per rule (`autograder.rules.ByHand`): the last definition of each covered name, as
  execution leaves it, and every top-level definition it reaches by name (helpers,
  aliases such as `c = F.conv2d`, imports) are searched for the forbidden names:
  attributes (`F.conv2d`, `loss.backward`), imported names, unbound global names and
  strings (`getattr(F, "conv2d")`). Names the student defines (functions, methods,
  classes) are never taken for a torch built-in of the same name.
* everywhere: attempts to switch the operation recording off or to run code it cannot
  see: torch internals (`torch._C`, dispatch and function modes), the grader's own
  modules, dynamic code (`exec`, `eval`, `__import__`, `pickle`), frames and interpreter
  internals, other threads and processes.

This runs in the trusted process when grading and inside the notebook for `check(...)`;
it imports only the standard library.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field

from .rules import ByHand, Evidence

#: Modules whose use could hide work from the recorder or reach into the grader.
TAMPER_MODULES = frozenset({
    "gc", "ctypes", "cffi", "inspect", "importlib", "builtins", "threading", "_thread", "multiprocessing",
    "concurrent", "asyncio", "subprocess", "pickle", "dill", "marshal", "runpy", "code", "codeop", "dis",
})
#: Attributes that reach interpreter internals, frames, or the recorder's machinery, on any object.
TAMPER_ATTRIBUTES = frozenset({
    "__globals__", "__code__", "__closure__", "__subclasses__", "__builtins__", "__bases__", "__base__", "__mro__",
    "__self__", "__func__", "__getattribute__", "__loader__", "__spec__",
    "f_back", "f_globals", "f_locals", "f_builtins", "f_code", "tb_frame", "gi_frame", "cr_frame", "ag_frame",
    "_getframe", "_current_frames", "settrace", "setprofile",
    "TorchDispatchMode", "TorchFunctionMode", "overrides", "_python_dispatch", "_C", "_disable_current_modes",
    "_pop_mode", "_push_mode", "_engine_run_backward", "_execution_engine",
})
#: Built-in functions that run code the source check cannot read.
TAMPER_BUILTINS = frozenset({"exec", "eval", "compile", "__import__", "breakpoint", "__builtins__"})
#: Attributes of these modules that reach the interpreter or start processes.
TAMPER_MODULE_ATTRIBUTES = {
    "sys": frozenset({"modules", "meta_path", "path_hooks"}),
    "os": frozenset({"fork", "forkpty", "system", "popen", "posix_spawn", "posix_spawnp", "execv", "execve",
                     "execl", "execle", "execlp", "execvp", "execvpe", "spawnv", "spawnve", "spawnl", "spawnle"}),
    "torch": frozenset({"compile", "library"}),
}
#: Libraries whose attributes are never the student's own functions, whatever the student names theirs.
LIBRARIES = frozenset({"torch", "functorch", "numpy", "scipy"})
#: The grader's modules a notebook may use: data generators and the setup cell's `check`.
ALLOWED_GRADER_MODULES = ("autograder.checklib", "autograder.selfcheck")


@dataclass
class Findings:
    """What the source says: attempts to tamper (against every rule) and forbidden uses per rule."""

    tamper: list[Evidence] = field(default_factory=list)
    by_rule: dict[ByHand, list[Evidence]] = field(default_factory=dict)


@dataclass(frozen=True)
class _Unit:
    """A parsed piece of a cell: the cell itself, or the body of a `%%time` magic inside it."""

    label: str  # "celda 7" (grading) or "celda [7]" (notebook)
    tree: ast.Module
    lines: tuple[str, ...]
    offset: int = 0  # line of the unit's first line in its cell, minus one

    def where(self, node: ast.AST) -> str:
        line = getattr(node, "lineno", 1)
        code = self.lines[line - 1].strip() if 0 < line <= len(self.lines) else ""
        code = code if len(code) <= 80 else code[:79] + "…"
        shown = f" (`{code}`)" if code and "`" not in code else ""
        return f"en la {self.label}, línea {line + self.offset}{shown}"


@dataclass(frozen=True)
class _Binding:
    """A top-level name: what bound it last."""

    unit: _Unit
    node: ast.AST  # a def/class, an assignment's statement, or an import
    alias: ast.alias | None = None


def scan(cells: list[tuple[str, str]], rules: tuple[ByHand, ...]) -> Findings:
    """Read `cells` ((label, Python source) in execution order) for tampering and for each rule."""
    units = _parse(cells)
    program = _Program(units)
    findings = Findings(tamper=program.tamper())
    for rule in rules:
        findings.by_rule[rule] = program.rule_findings(rule)
    return findings


def _parse(cells: list[tuple[str, str]]) -> list[_Unit]:
    units = []
    for label, source in cells:
        try:
            tree = ast.parse(source)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            continue  # it never ran either
        unit = _Unit(label, tree, tuple(source.splitlines()))
        units.append(unit)
        units += _magic_bodies(unit)
    return units


def _magic_bodies(unit: _Unit) -> list[_Unit]:
    """The code of `%%time`/`%time`/`%%capture` inside a cell (IPython turns it into a string argument)."""
    bodies = []
    for node in ast.walk(unit.tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("run_cell_magic", "run_line_magic") and node.args
                and all(isinstance(a, ast.Constant) and isinstance(a.value, str) for a in node.args)):
            continue
        body = node.args[-1].value
        try:
            tree = ast.parse(body)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            continue
        offset = node.lineno if node.func.attr == "run_cell_magic" else node.lineno - 1
        bodies.append(_Unit(unit.label, tree, tuple(body.splitlines()), offset))
    return bodies


def _module_statements(body: list[ast.stmt]):
    """Statements that run at module level, compound statements' bodies included."""
    for statement in body:
        yield statement
        if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        for name in ("body", "orelse", "finalbody"):
            yield from _module_statements(getattr(statement, name, []) or [])
        for handler in getattr(statement, "handlers", []) or []:
            yield from _module_statements(handler.body)


def _dotted(module: str | None, name: str | None = None) -> list[str]:
    parts = (module or "").split(".") if module else []
    return parts + ([name] if name else [])


class _Program:
    """The submission's top-level bindings and the names it defines itself."""

    def __init__(self, units: list[_Unit]) -> None:
        self.units = units
        self.bindings: dict[str, _Binding] = {}
        self.defined: set[str] = set()  # every function, method and class name the student wrote
        self.modules: dict[str, str] = {}  # alias -> module path, from every import anywhere
        for unit in units:
            for statement in _module_statements(unit.tree.body):
                self._bind(unit, statement)
            for node in ast.walk(unit.tree):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    self.defined.add(node.name)
                elif isinstance(node, ast.Import):
                    for alias in node.names:
                        if alias.asname:
                            self.modules[alias.asname] = alias.name
                        else:
                            self.modules[alias.name.split(".")[0]] = alias.name.split(".")[0]
                elif isinstance(node, ast.ImportFrom) and node.module:
                    for alias in node.names:
                        self.modules[alias.asname or alias.name] = f"{node.module}.{alias.name}"

    def _bind(self, unit: _Unit, statement: ast.stmt) -> None:
        if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            self.bindings[statement.name] = _Binding(unit, statement)
        elif isinstance(statement, (ast.Import, ast.ImportFrom)):
            for alias in statement.names:
                bound = alias.asname or alias.name.split(".")[0]
                if bound != "*":
                    self.bindings[bound] = _Binding(unit, statement, alias)
        elif isinstance(statement, (ast.Assign, ast.AnnAssign, ast.AugAssign, ast.For, ast.AsyncFor, ast.With,
                                    ast.AsyncWith)):
            targets = statement.targets if isinstance(statement, ast.Assign) else [
                getattr(statement, "target", None), *[i.optional_vars for i in getattr(statement, "items", [])]]
            for target in targets:
                for node in ast.walk(target) if target is not None else ():
                    if isinstance(node, ast.Name):
                        self.bindings[node.id] = _Binding(unit, statement)

    def module_of(self, node: ast.AST) -> str | None:
        """The module path an attribute chain's root name was imported as (`F` -> torch.nn.functional)."""
        while isinstance(node, ast.Attribute):
            node = node.value
        return self.modules.get(node.id) if isinstance(node, ast.Name) else None

    # Rules -------------------------------------------------------------------------

    def rule_findings(self, rule: ByHand) -> list[Evidence]:
        labels = {name: forbidden.label for forbidden in rule.forbid for name in forbidden.names}
        found: list[Evidence] = []
        queue, seen = list(rule.names), set()
        while queue:
            name = queue.pop()
            if name in seen or name not in self.bindings:
                continue
            seen.add(name)
            binding = self.bindings[name]
            if binding.alias is not None:  # reached an import: `from torch.nn.functional import conv2d as c`
                found += self._import_hits(binding.unit, binding.node, labels, [binding.alias])
                continue
            walker = _RuleWalker(self, binding.unit, labels)
            walker.visit(binding.node)
            found += walker.found
            queue += sorted(walker.free - seen)
        return found

    def _import_hits(self, unit: _Unit, node: ast.AST, labels: dict[str, str], aliases) -> list[Evidence]:
        module = node.module if isinstance(node, ast.ImportFrom) else None
        hits = []
        for alias in aliases:
            for part in _dotted(module, alias.name) if module else _dotted(alias.name):
                if part in labels:
                    hits.append(Evidence(labels[part], unit.where(node), part))
                    break
        return hits

    # Tampering ---------------------------------------------------------------------

    def tamper(self) -> list[Evidence]:
        found = []
        for unit in self.units:
            for node in ast.walk(unit.tree):
                what = self._tamper(node)
                if what:
                    found.append(Evidence("", unit.where(node), what))
        return found

    def _tamper(self, node: ast.AST) -> str | None:
        if isinstance(node, ast.Import):
            return next((a.name for a in node.names if _tampering_module(_dotted(a.name))), None)
        if isinstance(node, ast.ImportFrom):
            if node.level:
                return "import relativo"
            return next((f"{node.module}.{a.name}" for a in node.names
                         if _tampering_module(_dotted(node.module, a.name))), None)
        if isinstance(node, ast.Attribute):
            return self._tamper_attribute(node.value, node.attr)
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
            if node.id in TAMPER_BUILTINS and node.id not in self.defined:
                return node.id
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.args:
            function, target = node.func.id, node.args[0]
            if function in ("getattr", "setattr", "delattr", "hasattr") and len(node.args) >= 2:
                name = node.args[1]
                if isinstance(name, ast.Constant) and isinstance(name.value, str):
                    return self._tamper_attribute(target, name.value)
                if self.module_of(target):
                    return f"{function}({ast.unparse(target)}, <nombre calculado>)"
            if function == "vars" and self.module_of(target):
                return f"vars({ast.unparse(target)})"
        return None

    def _tamper_attribute(self, base: ast.AST, attr: str) -> str | None:
        if attr in TAMPER_ATTRIBUTES:
            return attr
        module = self.module_of(base)
        if module is None:
            return None
        root = module.split(".")[0]
        if attr in TAMPER_MODULE_ATTRIBUTES.get(root, ()) or (root == "torch" and attr.startswith("_")):
            return f"{module}.{attr}"
        if attr == "__dict__" or _tampering_module(_dotted(module, attr)):
            return f"{module}.{attr}"
        return None


def _tampering_module(parts: list[str]) -> bool:
    """Does an import path reach the grader, torch internals, or a module that hides work?"""
    if not parts:
        return False
    root = parts[0]
    if root == "autograder":
        path = ".".join(parts)
        return not any(path == allowed or path.startswith(allowed + ".") for allowed in ALLOWED_GRADER_MODULES)
    if root == "torch":
        return any(p.startswith("_") or p in ("overrides", "library") for p in parts[1:])
    return root in TAMPER_MODULES or (root in TAMPER_MODULE_ATTRIBUTES and len(parts) > 1
                                      and parts[1] in TAMPER_MODULE_ATTRIBUTES[root])


class _RuleWalker(ast.NodeVisitor):
    """Forbidden names inside one definition, and the global names it uses (to follow)."""

    def __init__(self, program: _Program, unit: _Unit, labels: dict[str, str]) -> None:
        self.program = program
        self.unit = unit
        self.labels = labels
        self.found: list[Evidence] = []
        self.free: set[str] = set()
        self.scopes: list[set[str]] = []

    def _hit(self, node: ast.AST, name: str, *, library: bool = False) -> None:
        """`library`: the name is an attribute of an imported library module (`torch.softmax`), so it is the
        built-in even when the student also defines a function of that name."""
        if name in self.labels and (library or name not in self.program.defined):
            self.found.append(Evidence(self.labels[name], self.unit.where(node), name))

    def _scoped(self, node: ast.AST, parameters: ast.arguments | None) -> None:
        bound = _bound_names(node, parameters)
        self.scopes.append(bound)
        for child in ast.iter_child_nodes(node):
            if child is not parameters:
                self.visit(child)
        self.scopes.pop()
        if parameters is not None:
            self.visit(parameters)  # defaults and annotations belong to the enclosing scope

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        for decorator in node.decorator_list:
            self.visit(decorator)
        self._scoped(node, node.args)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Lambda(self, node: ast.Lambda) -> None:
        self._scoped(node, node.args)

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self.generic_visit(node)

    def visit_Name(self, node: ast.Name) -> None:
        if not isinstance(node.ctx, ast.Load) or any(node.id in scope for scope in self.scopes):
            return
        if node.id in self.program.bindings:
            self.free.add(node.id)
        else:
            self._hit(node, node.id)  # e.g. after `from torch.nn.functional import *`

    def visit_Attribute(self, node: ast.Attribute) -> None:
        module = self.program.module_of(node.value)
        self._hit(node, node.attr, library=module is not None and module.split(".")[0] in LIBRARIES)
        self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        self.found += self.program._import_hits(self.unit, node, self.labels, node.names)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        self.found += self.program._import_hits(self.unit, node, self.labels, node.names)

    def visit_Constant(self, node: ast.Constant) -> None:
        if isinstance(node.value, str):
            self._hit(node, node.value)  # getattr(F, "conv2d")

    def visit_Expr(self, node: ast.Expr) -> None:
        if not (isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)):  # docstrings
            self.generic_visit(node)


def _bound_names(node: ast.AST, parameters: ast.arguments | None) -> set[str]:
    """Names a function binds locally: parameters, assignments, imports, nested definitions."""
    bound: set[str] = set()
    if parameters is not None:
        for arg in [*parameters.posonlyargs, *parameters.args, *parameters.kwonlyargs,
                    parameters.vararg, parameters.kwarg]:
            if arg is not None:
                bound.add(arg.arg)
    declared_global: set[str] = set()
    for child in ast.walk(node):
        if child is node:
            continue
        if isinstance(child, ast.Name) and not isinstance(child.ctx, ast.Load):
            bound.add(child.id)
        elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(child.name)
        elif isinstance(child, (ast.Import, ast.ImportFrom)):
            bound.update(a.asname or a.name.split(".")[0] for a in child.names)
        elif isinstance(child, ast.Global):
            declared_global.update(child.names)
        elif isinstance(child, ast.arg):
            bound.add(child.arg)  # nested functions' and lambdas' parameters
    return bound - declared_global
