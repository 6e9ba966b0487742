"""The source side of the by-hand rules: read the submitted cells, never run them.

Two scans over the cells' Python (after IPython's transform; `%%time` bodies included):

* per rule (`autograder.rules.ByHand`): the definitions of each covered name, as
  execution leaves them, and every top-level definition they reach by name (helpers,
  aliases such as `c = F.conv2d`, imports) are searched for the forbidden names:
  attributes (`F.conv2d`, `loss.backward`), imported names, unbound global names and
  strings (`getattr(F, "conv2d")`). A name's definitions are those of the last top-level
  statement that binds it (every branch of an `if` or `try` counts), plus whatever later
  patches it (`TwoLayerNet.loss = f`, `setattr`, a `global` assignment in a function).
  A name the student defines (a function, method or class) is never taken for a torch
  built-in of the same name, unless it is reached through torch itself (`torch.softmax`).
* everywhere: attempts to get around the operation recorder or to run code this scan
  cannot read: torch internals (`torch._C`, dispatch and function modes), the grader's
  own modules, dynamic code (`exec`, `eval`, `__import__`, unpickling), frames and
  interpreter internals (`sys.modules`, `gc.get_objects`), other threads and processes,
  and any of these reached through another module (`torch.sys`).

This runs in the trusted process when grading and inside the notebook for `check(...)`;
it imports only the standard library.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from functools import cached_property, lru_cache

from .rules import FORBIDDEN, TAMPER, UNREADABLE, ByHand, Evidence

#: Modules a notebook may not use at all: each runs code the recorder or this scan cannot see.
BANNED_MODULES = frozenset({
    "ctypes", "cffi", "importlib", "builtins", "threading", "_thread", "multiprocessing", "concurrent", "asyncio",
    "subprocess", "runpy", "code", "codeop", "marshal", "dill",
})
#: Attributes of otherwise ordinary modules that reach the interpreter, frames, or other processes.
BANNED_MODULE_ATTRIBUTES = {
    "sys": frozenset({"modules", "meta_path", "path_hooks", "_getframe", "_current_frames", "settrace",
                      "setprofile"}),
    "os": frozenset({"fork", "forkpty", "system", "popen", "posix_spawn", "posix_spawnp", "execv", "execve",
                     "execl", "execle", "execlp", "execvp", "execvpe", "spawnv", "spawnve", "spawnl", "spawnle"}),
    "gc": frozenset({"get_objects", "get_referrers", "get_referents"}),
    "inspect": frozenset({"currentframe", "stack", "trace", "getouterframes", "getinnerframes", "getframeinfo",
                          "getclosurevars"}),
    "pickle": frozenset({"load", "loads", "Unpickler"}),
    "torch": frozenset({"library", "overrides"}),
}
#: Modules nobody reaches through another module (`torch.sys`, `np.os`) except to hide it.
REEXPORTED = BANNED_MODULES | set(BANNED_MODULE_ATTRIBUTES) - {"torch"}
#: Attributes that reach interpreter internals, frames, or the recorder's machinery, on any object.
TAMPER_ATTRIBUTES = frozenset({
    "__globals__", "__code__", "__closure__", "__subclasses__", "__builtins__", "__bases__", "__base__", "__mro__",
    "__self__", "__func__", "__getattribute__", "__loader__", "__spec__",
    "f_back", "f_globals", "f_locals", "f_builtins", "f_code", "tb_frame", "gi_frame", "cr_frame", "ag_frame",
    "_getframe", "_current_frames", "TorchDispatchMode", "TorchFunctionMode", "_python_dispatch", "_C",
    "_disable_current_modes", "_pop_mode", "_push_mode", "_engine_run_backward", "_execution_engine",
    "enter_dual_level",
})
#: Built-in functions that run code this scan cannot read, or rebind names it cannot follow.
TAMPER_BUILTINS = frozenset({"exec", "eval", "compile", "__import__", "breakpoint", "__builtins__", "globals"})
#: Private torch helpers that people writing layers by hand use (`_pair`, fan-in): they reach no internals.
HARMLESS_PRIVATE_TORCH = ("torch.nn.modules.utils", "torch.nn.init")
#: The grader's modules a notebook may use: data generators and the setup cell's `check`.
ALLOWED_GRADER_PATHS = ("autograder.checklib", "autograder.selfcheck.make_check")
#: Libraries whose attributes are never the student's own functions, whatever the student names theirs.
LIBRARIES = frozenset({"torch", "functorch", "numpy", "scipy"})
#: Calls inside a covered definition that run its code where the recorder does not look.
UNRECORDED = frozenset({"torch.compile"})


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

    @cached_property
    def nodes(self) -> tuple[ast.AST, ...]:
        """Every node of the tree (`ast.walk` order), walked once for all the passes of a scan."""
        return tuple(ast.walk(self.tree))

    @cached_property
    def has_global(self) -> bool:
        """Whether any function of the unit declares `global` (only then can a function rebind a top-level name)."""
        return any(isinstance(node, ast.Global) for node in self.nodes)

    def where(self, node: ast.AST) -> str:
        line = getattr(node, "lineno", 1)
        code = self.lines[line - 1].strip() if 0 < line <= len(self.lines) else ""
        code = code if len(code) <= 80 else code[:79] + "…"
        shown = f" (`{code}`)" if code and "`" not in code else ""
        return f"en la {self.label}, línea {line + self.offset}{shown}"


@dataclass(frozen=True)
class _Binding:
    """Something that gives a top-level name its value: a def/class, an assigned value, an import."""

    unit: _Unit
    node: ast.AST  # what to read
    statement: int  # the top-level statement it belongs to: a later statement's bindings replace it
    alias: ast.alias | None = None  # for imports: the imported name


def scan(cells: list[tuple[str, str]], rules: tuple[ByHand, ...]) -> Findings:
    """Read `cells` ((label, Python source) in execution order) for tampering and for each rule."""
    try:
        program = _Program(_parse(cells))
        findings = Findings(tamper=program.tamper())
        for rule in rules:
            findings.by_rule[rule] = program.rule_findings(rule)
    except (RecursionError, MemoryError):  # code too deep to read could hide anything
        return Findings(tamper=[Evidence(UNREADABLE)])
    return findings


#: Cells up to this long are parsed once for a whole batch (`_kept_cell`); a longer one, almost always the
#: student's own (a pasted data table, say), is parsed for its own scan only, so the cache stays small.
KEPT_CELL_CHARS = 65_536


def _parse(cells: list[tuple[str, str]]) -> list[_Unit]:
    """The cells that compile; a syntax error never ran either (an unreadably deep cell raises RecursionError)."""
    return [unit for label, source in cells
            for unit in (_kept_cell if len(source) <= KEPT_CELL_CHARS else _parsed_cell)(label, source)]


def _parsed_cell(label: str, source: str) -> tuple[_Unit, ...]:
    """One cell's units: the cell itself and the code of its magics."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return ()
    unit = _Unit(label, tree, tuple(source.splitlines()))
    return (unit, *_magic_bodies(unit))


#: `_parsed_cell`, kept for the next submission: most of a class's cells are the notebook's own, the same in every
#: submission, and a scan only reads the trees.
_kept_cell = lru_cache(maxsize=1024)(_parsed_cell)


def _magic_bodies(unit: _Unit) -> list[_Unit]:
    """The code of `%%time`/`%time`/`%%capture` inside a cell (IPython turns it into a string argument)."""
    bodies = []
    for node in unit.nodes:
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("run_cell_magic", "run_line_magic") and node.args
                and all(isinstance(a, ast.Constant) and isinstance(a.value, str) for a in node.args)):
            continue
        body = node.args[-1].value
        try:
            tree = ast.parse(body)
        except (SyntaxError, ValueError):
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
        for case in getattr(statement, "cases", []) or []:
            yield from _module_statements(case.body)


def _target_names(target: ast.AST) -> list[str]:
    """The names an assignment target binds (`a`, `a, (b, *c)`); attributes and subscripts bind none."""
    if isinstance(target, ast.Name):
        return [target.id]
    if isinstance(target, (ast.Tuple, ast.List)):
        return [name for element in target.elts for name in _target_names(element)]
    if isinstance(target, ast.Starred):
        return _target_names(target.value)
    return []


def _patched_name(target: ast.AST) -> str | None:
    """The name whose object an assignment target patches: `Net.loss = f` and `Net.params["W"] = w` patch Net."""
    while isinstance(target, (ast.Attribute, ast.Subscript)):
        target = target.value
    return target.id if isinstance(target, ast.Name) else None


class _Program:
    """The submission's top-level bindings, its import aliases, and the names it defines itself."""

    def __init__(self, units: list[_Unit]) -> None:
        self.units = units
        self.bindings: dict[str, list[_Binding]] = {}
        self.defined: set[str] = set()  # every function, method and class name the student wrote
        self.modules: dict[str, str] = {}  # alias -> module path, from every import anywhere
        serial = 0
        for unit in units:
            for top in unit.tree.body:
                serial += 1
                for statement in _module_statements([top]):
                    self._bind(unit, statement, serial)
            for node in unit.nodes:
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    self.defined.add(node.name)
                    if unit.has_global:
                        self._bind_globals(unit, node, serial)
                elif isinstance(node, ast.Import):
                    for alias in node.names:
                        root = alias.name.split(".")[0]
                        self.modules[alias.asname or root] = alias.name if alias.asname else root
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    for alias in node.names:
                        self.modules[alias.asname or alias.name] = f"{node.module}.{alias.name}"

    def _add(self, name: str, binding: _Binding, *, patch: bool = False) -> None:
        """A new statement's binding replaces the old ones; bindings of one statement, and patches, add up."""
        known = self.bindings.get(name, [])
        if patch or (known and known[-1].statement == binding.statement):
            self.bindings[name] = [*known, binding]
        else:
            self.bindings[name] = [binding]

    def _bind(self, unit: _Unit, statement: ast.stmt, serial: int) -> None:
        def bind(name: str, node: ast.AST, *, patch: bool = False, alias: ast.alias | None = None) -> None:
            self._add(name, _Binding(unit, node, serial, alias), patch=patch)

        if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bind(statement.name, statement)
        elif isinstance(statement, (ast.Import, ast.ImportFrom)):
            for alias in statement.names:
                if alias.name != "*":
                    bind(alias.asname or alias.name.split(".")[0], statement, alias=alias)
        elif isinstance(statement, (ast.Assign, ast.AnnAssign, ast.AugAssign)) and statement.value is not None:
            targets = statement.targets if isinstance(statement, ast.Assign) else [statement.target]
            for target in targets:
                for name in _target_names(target):
                    bind(name, statement.value, patch=isinstance(statement, ast.AugAssign))
                patched = _patched_name(target)
                if patched and not isinstance(target, ast.Name):
                    bind(patched, statement.value, patch=True)
        elif isinstance(statement, (ast.For, ast.AsyncFor)):
            for name in _target_names(statement.target):
                bind(name, statement.iter)
        elif isinstance(statement, (ast.With, ast.AsyncWith)):
            for item in statement.items:
                for name in _target_names(item.optional_vars) if item.optional_vars is not None else ():
                    bind(name, item.context_expr)
        elif (isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Call)
              and isinstance(statement.value.func, ast.Name) and statement.value.func.id == "setattr"
              and statement.value.args and isinstance(statement.value.args[0], ast.Name)):
            bind(statement.value.args[0].id, statement.value, patch=True)  # setattr(Net, "loss", f)

    def _bind_globals(self, unit: _Unit, function: ast.AST, serial: int) -> None:
        """`global f` in a function that then defines or assigns `f`: that code may become `f`."""
        if isinstance(function, ast.ClassDef):
            return
        names = {n for node in ast.walk(function) if isinstance(node, ast.Global) for n in node.names}
        for node in ast.walk(function) if names else ():
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name in names:
                self._add(node.name, _Binding(unit, node, serial), patch=True)
            elif isinstance(node, ast.Assign):
                for name in {n for t in node.targets for n in _target_names(t)} & names:
                    self._add(name, _Binding(unit, node.value, serial), patch=True)

    def path_of(self, node: ast.AST) -> str | None:
        """The dotted path an expression names when it starts at an imported module: `F.conv2d` ->
        `torch.nn.functional.conv2d`, `getattr(torch, "sys")` -> `torch.sys`; None otherwise."""
        if isinstance(node, ast.Name):
            return self.modules.get(node.id)
        if isinstance(node, ast.Attribute):
            base = self.path_of(node.value)
            return f"{base}.{node.attr}" if base else None
        name = _constant_getattr(node)
        if name is not None:
            base = self.path_of(node.args[0])
            return f"{base}.{name}" if base else None
        return None

    # Rules -------------------------------------------------------------------------

    def rule_findings(self, rule: ByHand) -> list[Evidence]:
        labels = {name: forbidden.label for forbidden in rule.forbid for name in forbidden.names}
        found: list[Evidence] = []
        queue, seen = list(rule.names), set()
        while queue:
            name = queue.pop()
            if name in seen:
                continue
            seen.add(name)
            for binding in self.bindings.get(name, []):
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
            for part in [*(module or "").split("."), *alias.name.split(".")]:
                if part in labels:
                    hits.append(Evidence(FORBIDDEN, unit.where(node), part, labels[part]))
                    break
        return hits

    # Tampering ---------------------------------------------------------------------

    def tamper(self) -> list[Evidence]:
        found = []
        for unit in self.units:
            for node in unit.nodes:
                what = self._tamper(node)
                if what:
                    found.append(Evidence(TAMPER, unit.where(node), what))
        return found

    def _tamper(self, node: ast.AST) -> str | None:
        if isinstance(node, ast.Import):
            return next((a.name for a in node.names if _banned_path(a.name)), None)
        if isinstance(node, ast.ImportFrom):
            if node.level:
                return ast.unparse(node)
            return next((f"{node.module}.{a.name}" for a in node.names if _banned_path(f"{node.module}.{a.name}")),
                        None)
        if isinstance(node, ast.Attribute):
            return self._tamper_attribute(node, node.attr)
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
            return node.id if node.id in TAMPER_BUILTINS and node.id not in self.defined else None
        if not isinstance(node, ast.Call):
            return None
        if any(k.arg == "weights_only" and not (isinstance(k.value, ast.Constant) and k.value.value is True)
               for k in node.keywords):
            return "weights_only=False"  # torch.load unpickling code this scan cannot read
        name = _constant_getattr(node)
        if name is not None:
            return self._tamper_attribute(node, name)
        if isinstance(node.func, ast.Name) and node.args and self.path_of(node.args[0]):
            function = node.func.id
            if function in ("getattr", "setattr", "delattr", "hasattr"):
                return f"{function}({ast.unparse(node.args[0])}, <nombre calculado>)"
            if function == "vars":
                return f"vars({ast.unparse(node.args[0])})"
        return None

    def _tamper_attribute(self, node: ast.AST, attr: str) -> str | None:
        """`node` reads attribute `attr` (an `ast.Attribute`, or a `getattr` with a constant name)."""
        if attr in TAMPER_ATTRIBUTES:
            return attr
        path = self.path_of(node)
        if path is None:
            return None
        return path if attr == "__dict__" or _banned_path(path) else None


def _constant_getattr(node: ast.AST) -> str | None:
    """The attribute name of `getattr(x, "name")`-like calls with a constant name."""
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "setattr", "delattr", "hasattr") and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str)):
        return node.args[1].value
    return None


def _banned_path(path: str) -> bool:
    """Does a dotted path (an import, or an attribute chain from an imported module) reach the grader,
    torch internals, or something that hides work from the recorder?"""
    parts = path.split(".")
    root = parts[0]
    if root == "autograder":
        return not any(path == allowed or path.startswith(allowed + ".") for allowed in ALLOWED_GRADER_PATHS) \
            or any(p in REEXPORTED for p in parts[1:])
    if root in BANNED_MODULES or any(p in REEXPORTED for p in parts[1:]):
        return True
    if len(parts) > 1 and parts[1] in BANNED_MODULE_ATTRIBUTES.get(root, ()):
        return True
    if root == "torch" and not path.startswith(HARMLESS_PRIVATE_TORCH):
        return any(_private(p) or p in BANNED_MODULE_ATTRIBUTES["torch"] for p in parts[1:])
    return False


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


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
            self.found.append(Evidence(FORBIDDEN, self.unit.where(node), name, self.labels[name]))

    def _scoped(self, node: ast.AST, parameters: ast.arguments | None) -> None:
        self.scopes.append(_bound_names(node, parameters))
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

    def visit_Name(self, node: ast.Name) -> None:
        if not isinstance(node.ctx, ast.Load) or any(node.id in scope for scope in self.scopes):
            return
        if node.id in self.program.bindings:
            self.free.add(node.id)
        else:
            self._hit(node, node.id)  # e.g. after `from torch.nn.functional import *`

    def visit_Attribute(self, node: ast.Attribute) -> None:
        path = self.program.path_of(node)
        if path in UNRECORDED:
            self.found.append(Evidence(TAMPER, self.unit.where(node), path))
        self._hit(node, node.attr, library=path is not None and path.split(".")[0] in LIBRARIES)
        self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        self.found += self.program._import_hits(self.unit, node, self.labels, node.names)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        self.found += self.program._import_hits(self.unit, node, self.labels, node.names)

    def visit_Constant(self, node: ast.Constant) -> None:
        if isinstance(node.value, str):
            self._hit(node, node.value)  # "conv2d" anywhere, e.g. getattr(F, "conv2d")

    def visit_Call(self, node: ast.Call) -> None:
        name = _constant_getattr(node)
        path = self.program.path_of(node.args[0]) if name is not None else None
        if path is not None and path.split(".")[0] in LIBRARIES:
            self._hit(node, name, library=True)  # getattr(torch, "lstm_cell"), even beside the student's own
        self.generic_visit(node)

    def visit_Expr(self, node: ast.Expr) -> None:
        if not (isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)):  # docstrings
            self.generic_visit(node)


def _bound_names(node: ast.AST, parameters: ast.arguments | None) -> set[str]:
    """Names a function binds locally: parameters, assignments, imports, handlers, nested definitions."""
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
        elif isinstance(child, ast.ExceptHandler) and child.name:
            bound.add(child.name)
        elif isinstance(child, (ast.MatchAs, ast.MatchStar)) and child.name:
            bound.add(child.name)
        elif isinstance(child, ast.MatchMapping) and child.rest:
            bound.add(child.rest)
        elif isinstance(child, ast.Global):
            declared_global.update(child.names)
        elif isinstance(child, ast.arg):
            bound.add(child.arg)  # nested functions' and lambdas' parameters
    return bound - declared_global
