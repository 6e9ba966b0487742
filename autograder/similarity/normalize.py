"""Code to a token stream that cheap disguises do not change.

A cell is parsed with `ast` (IPython magics and `!shell` lines are blanked first, so
line numbers stay those of the cell). The stream has one token per AST node with its
salient field (the operator, the attribute, the constant), so comments, docstrings,
whitespace and formatting are gone. Names the student binds (parameters, locals,
their own helpers) become placeholders numbered by first occurrence in their scope;
names the code only reads (`torch`, `F`, builtins, the release's functions) and
attribute names stay as written, since `torch.matmul` vs `@` is a real difference.
String literals become `STR` (messages are cheap to rewrite), numbers stay.

Statements of a block are emitted in a canonical order: a topological order of their
dependencies (who writes what the other reads or writes; `return`, `raise` and friends
keep their place), ties broken by the statement's tokens with every placeholder
blinded. So swapping two independent statements gives the same stream.

A cell that does not parse falls back to `tokenize` with the same renaming rules on a
best-effort basis (a NAME after `.` is an attribute; other bound-looking names are
renamed by first occurrence).
"""

from __future__ import annotations

import ast
import builtins
import io
import keyword
import re
import tokenize
from dataclasses import dataclass

#: Token text, the cell it came from (index into the part's cells) and the line in that cell (1-based).
Token = tuple[str, int, int]

_MAGIC = re.compile(r"^\s*(%|!)")
_BUILTINS = frozenset(dir(builtins))
#: Methods that change their object (plus every torch in-place method, `name_`): a call is a write of the object.
_MUTATORS = frozenset({"append", "extend", "insert", "pop", "remove", "clear", "update", "setdefault", "sort",
                       "reverse", "add", "discard", "backward", "step", "zero_grad", "register_buffer",
                       "register_parameter", "load_state_dict", "popitem", "appendleft"})
_BARRIERS = (ast.Return, ast.Raise, ast.Break, ast.Continue, ast.Global, ast.Nonlocal)
#: Blocks longer than this keep their written order (the ordering is quadratic in the block's length).
MAX_SORTED_BLOCK = 300


def strip_magics(source: str) -> str:
    """IPython-only lines (`%magic`, `%%cell magic`, `!shell`) blanked, line numbers kept."""
    return "\n".join("" if _MAGIC.match(line) else line for line in source.split("\n"))


def module_names(source: str) -> set[str]:
    """Names a cell binds at module level (functions, classes, globals, imports): the release's API."""
    try:
        tree = ast.parse(strip_magics(source))
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return set(_token_names(source))
    return _bound_names(tree.body)


def defined_functions(source: str) -> set[str]:
    """Top-level `def` and `class` names of a cell (to place a cell without nbgrader metadata)."""
    try:
        tree = ast.parse(strip_magics(source))
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return set()
    return {s.name for s in tree.body if isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}


def tokens(sources: list[str], *, given: frozenset[str] = frozenset()) -> list[Token]:
    """The normalised stream of a part's cells, in cell order; `given`: module names kept as written."""
    trees: list[ast.Module | None] = []
    renamable: set[str] = set()
    for source in sources:
        try:
            tree = ast.parse(strip_magics(source))
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            tree = None
        trees.append(tree)
        if tree is not None:
            renamable |= _bound_names(tree.body)
    renamable -= given | _BUILTINS
    stream: list[Token] = []
    for cell, (source, tree) in enumerate(zip(sources, trees)):
        if tree is None:
            stream += _fallback_tokens(source, cell, given)
            continue
        # Numbering restarts in every cell, so a cell added or moved does not renumber the others.
        scope = _Scope(None, renamable, depth=0)
        try:
            stream += _Emitter(cell).block(tree.body, scope)
        except RecursionError:
            stream += _fallback_tokens(source, cell, given)
    return stream


@dataclass
class _Scope:
    parent: "_Scope | None"
    renamable: set[str]
    depth: int

    def __post_init__(self) -> None:
        self.mapping: dict[str, str] = {}

    def name(self, name: str, *, blind: bool) -> str:
        scope: _Scope | None = self
        while scope is not None:
            if name in scope.renamable:
                if blind:
                    return "V"
                if name not in scope.mapping:
                    scope.mapping[name] = f"v{scope.depth}.{len(scope.mapping)}"
                return scope.mapping[name]
            scope = scope.parent
        return name


class _Emitter:
    """Walks a tree and emits tokens; `blind` emits every placeholder as `V` (the sort key of a statement)."""

    def __init__(self, cell: int, *, blind: bool = False, cache: dict | None = None) -> None:
        self.cell = cell
        self.blind = blind
        self.cache = {} if cache is None else cache  # orders of blocks, keys of statements, by node id
        self.out: list[Token] = []
        self.line = 1

    def block(self, body: list[ast.stmt], scope: _Scope) -> list[Token]:
        for statement in _canonical_order(body, scope, self):
            self.node(statement, scope)
        return self.out

    def emit(self, text: str) -> None:
        self.out.append((text, self.cell, self.line))

    def node(self, node: ast.AST, scope: _Scope) -> None:
        line = getattr(node, "lineno", None)
        if line is not None:
            self.line = line
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            return  # a docstring or a bare string: a comment in disguise
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            self.function(node, scope)
            return
        if isinstance(node, ast.ClassDef):
            self.emit("ClassDef")
            self.emit(scope.name(node.name, blind=self.blind))
            for child in (*node.decorator_list, *node.bases, *node.keywords):
                self.node(child, scope)
            # Class attributes and methods are reached as `self.attr`: their names stay as written.
            self.block(node.body, _Scope(scope, set(), depth=scope.depth + 1))
            self.emit("/ClassDef")
            return
        if isinstance(node, ast.Name):
            self.emit(scope.name(node.id, blind=self.blind))
            return
        if isinstance(node, ast.arg):
            self.emit(scope.name(node.arg, blind=self.blind))
            return
        if isinstance(node, ast.Constant):
            value = node.value
            self.emit("STR" if isinstance(value, (str, bytes)) else f"C:{value!r}")
            return
        if isinstance(node, ast.Attribute):
            self.node(node.value, scope)
            self.emit(f".{node.attr}")
            return
        if isinstance(node, ast.keyword):
            self.emit(f"{node.arg}=" if node.arg else "**")
            self.node(node.value, scope)
            return
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            self.emit(type(node).__name__ + (f":{node.module}" if isinstance(node, ast.ImportFrom) else ""))
            for alias in node.names:
                self.emit(alias.name)
                if alias.asname:
                    self.emit(scope.name(alias.asname, blind=self.blind))
            return
        if isinstance(node, (ast.Global, ast.Nonlocal)):
            self.emit(type(node).__name__)
            return
        if isinstance(node, (ast.expr_context, ast.operator, ast.unaryop, ast.cmpop, ast.boolop)):
            self.emit(type(node).__name__)
            return
        self.emit(type(node).__name__)
        for field, value in ast.iter_fields(node):
            if isinstance(value, list):
                if value and all(isinstance(v, ast.stmt) for v in value):
                    self.block(value, scope)
                    self.emit(f"/{field}")
                else:
                    for item in value:
                        if isinstance(item, ast.AST):
                            self.node(item, scope)
            elif isinstance(value, ast.AST) and not isinstance(value, ast.expr_context):
                self.node(value, scope)
            elif isinstance(value, str) and field in ("name", "id", "arg", "attr"):
                self.emit(scope.name(value, blind=self.blind))

    def function(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda, scope: _Scope) -> None:
        kind = type(node).__name__
        self.emit(kind)
        if not isinstance(node, ast.Lambda):
            self.emit(scope.name(node.name, blind=self.blind))
            for decorator in node.decorator_list:
                self.node(decorator, scope)
        args = node.args
        for default in (*args.defaults, *(d for d in args.kw_defaults if d is not None)):
            self.node(default, scope)
        params = [*args.posonlyargs, *args.args, *([args.vararg] if args.vararg else []), *args.kwonlyargs,
                  *([args.kwarg] if args.kwarg else [])]
        body = node.body if isinstance(node.body, list) else [ast.Expr(node.body)]
        declared = {n for s in _walk_body(body) if isinstance(s, (ast.Global, ast.Nonlocal)) for n in s.names}
        local = ({p.arg for p in params} | _bound_names(body)) - declared
        inner = _Scope(scope, local, depth=scope.depth + 1)
        for param in params:
            self.node(param, inner)
        self.emit("body")
        self.block(body, inner)
        self.emit(f"/{kind}")


def _canonical_order(body: list[ast.stmt], scope: _Scope, parent: _Emitter) -> list[ast.stmt]:
    """`body` in a topological order of its dependencies, ties broken by the blinded tokens."""
    if len(body) < 2 or len(body) > MAX_SORTED_BLOCK:
        return body
    cached = parent.cache.get(("order", id(body)))
    if cached is not None:
        return cached
    effects = [_effects(s) for s in body]
    keys = []
    for statement in body:
        key = parent.cache.get(("key", id(statement)))
        if key is None:
            emitter = _Emitter(parent.cell, blind=True, cache=parent.cache)
            emitter.node(statement, scope)
            key = parent.cache[("key", id(statement))] = tuple(t[0] for t in emitter.out)
        keys.append(key)
    after: list[list[int]] = [[] for _ in body]  # after[i]: statements that must follow i
    waiting = [0] * len(body)
    for j in range(len(body)):
        reads_j, writes_j, barrier_j = effects[j]
        for i in range(j):
            reads_i, writes_i, barrier_i = effects[i]
            if barrier_i or barrier_j or _conflict(writes_i, reads_j | writes_j) or _conflict(writes_j, reads_i):
                after[i].append(j)
                waiting[j] += 1
    ready = [i for i in range(len(body)) if waiting[i] == 0]
    order = []
    while ready:
        ready.sort(key=lambda i: (keys[i], i))
        i = ready.pop(0)
        order.append(body[i])
        for j in after[i]:
            waiting[j] -= 1
            if waiting[j] == 0:
                ready.append(j)
    parent.cache[("order", id(body))] = order
    return order


def _effects(statement: ast.stmt) -> tuple[set[str], set[str], bool]:
    """Names a statement reads and writes (`self.x` for attributes), and whether nothing may cross it."""
    if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        heads = [*statement.decorator_list, *getattr(statement, "bases", ())]
        if not isinstance(statement, ast.ClassDef):
            heads += [*statement.args.defaults, *(d for d in statement.args.kw_defaults if d is not None)]
        reads = {n.id for head in heads for n in ast.walk(head) if isinstance(n, ast.Name)}
        return reads, {statement.name}, False
    reads: set[str] = set()
    writes: set[str] = set()
    barrier = isinstance(statement, (ast.Expr, ast.Assert, ast.Delete)) and _has_call(statement)
    bases = set()  # Name nodes read as `name.attr`: recorded with their attribute (a parent is walked first)
    for node in ast.walk(statement):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            bases.add(id(node.value))
            path = f"{node.value.id}.{node.attr}"
            (reads if isinstance(node.ctx, ast.Load) else writes).add(path)
        if isinstance(node, _BARRIERS) or isinstance(node, (ast.Yield, ast.YieldFrom, ast.Await)):
            barrier = True
        elif isinstance(node, ast.Name) and id(node) not in bases:
            (reads if isinstance(node.ctx, ast.Load) else writes).add(node.id)
        elif isinstance(node, (ast.Subscript, ast.Attribute)) and not isinstance(node.ctx, ast.Load):
            base = _base_name(node)
            if base and not (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)):
                writes.add(base)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            attr = node.func.attr
            if attr in _MUTATORS or (attr.endswith("_") and not attr.endswith("__")):
                base = _base_name(node.func)
                if base:
                    writes.add(base)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            writes |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, ast.AugAssign):
            reads |= _names_of(node.target)
    return reads, writes, barrier


def _names_of(target: ast.AST) -> set[str]:
    if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name):
        return {f"{target.value.id}.{target.attr}"}
    base = _base_name(target)
    return {base} if base else set()


def _conflict(writes: set[str], touched: set[str]) -> bool:
    """Does writing `writes` clash with reading or writing `touched`? (`self` clashes with `self.x`.)"""
    if writes & touched:
        return True
    write_heads = {w.split(".", 1)[0] for w in writes}
    touched_heads = {t.split(".", 1)[0] for t in touched}
    return bool({w for w in writes if "." not in w} & touched_heads) or \
        bool(write_heads & {t for t in touched if "." not in t})


def _walk_body(body: list[ast.stmt]):
    """The statements of a function body, nested blocks included (not expressions: they bind no globals)."""
    stack = list(body)
    while stack:
        node = stack.pop()
        yield node
        for field in ("body", "orelse", "finalbody", "handlers", "cases"):
            stack.extend(n for n in getattr(node, field, ()) if isinstance(n, ast.AST))


def _has_call(node: ast.AST) -> bool:
    return any(isinstance(n, ast.Call) for n in ast.walk(node))


def _base_name(node: ast.AST) -> str | None:
    while isinstance(node, (ast.Attribute, ast.Subscript, ast.Call)):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else None


def _bound_names(body: list[ast.stmt]) -> set[str]:
    """Names bound in `body`'s own scope (not inside nested functions or classes)."""
    bound: set[str] = set()
    stack: list[ast.AST] = list(body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
            continue
        if isinstance(node, ast.Lambda):
            continue
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            bound.add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        stack.extend(ast.iter_child_nodes(node))
    return bound


def _token_names(source: str) -> list[str]:
    return [text for _, text, _ in _raw_tokens(source) if text.isidentifier()]


def _raw_tokens(source: str) -> list[tuple[int, str, int]]:
    """(type, text, line) of what `tokenize` can read of the source, stopping quietly at an error."""
    out = []
    try:
        for tok in tokenize.generate_tokens(io.StringIO(strip_magics(source)).readline):
            out.append((tok.type, tok.string, tok.start[0]))
    except (tokenize.TokenError, IndentationError, SyntaxError, ValueError):
        pass
    return out


_SKIP = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
         tokenize.ENDMARKER, tokenize.ENCODING}


def _fallback_tokens(source: str, cell: int, given: frozenset[str]) -> list[Token]:
    """`tokenize` stream of a cell that does not parse: same renaming rules, as well as they can be guessed."""
    out: list[Token] = []
    mapping: dict[str, str] = {}
    previous = ""
    for kind, text, line in _raw_tokens(source):
        if kind in _SKIP:
            continue
        if kind == tokenize.STRING or kind in _fstring_kinds():
            text_out = "STR"
        elif kind == tokenize.NUMBER:
            text_out = f"C:{text}"
        elif kind == tokenize.NAME and previous == ".":
            text_out = f".{text}"
        elif kind == tokenize.NAME and not keyword.iskeyword(text) and text not in given and text not in _BUILTINS \
                and text not in _COMMON_MODULES:
            text_out = mapping.setdefault(text, f"t.{len(mapping)}")
        else:
            text_out = text
        previous = text
        if text_out.startswith(".") and out and out[-1][0] == ".":
            out.pop()
        out.append((text_out, cell, line))
    return out


_COMMON_MODULES = frozenset({"torch", "F", "nn", "np", "math", "plt", "time", "random", "functools", "itertools"})


def _fstring_kinds() -> set[int]:
    return {getattr(tokenize, name) for name in ("FSTRING_START", "FSTRING_MIDDLE", "FSTRING_END")
            if hasattr(tokenize, name)}
