"""Mutants of a solution notebook: one small AST change each, in the code a grade cell covers.

A *part* is one nbgrader grade cell together with the solution cells that come before it
(after the previous grade cell). Its mutation sites are the nodes of the functions and
classes those cells define that lie inside a solution region (`### BEGIN SOLUTION` ...
`### END SOLUTION`; the whole definition when the cell has no markers): the code a
student writes. Each operator proposes replacements for one node; a mutant is the cell
unparsed (`ast.unparse`) with that one replacement. Mutants that unparse to the original
code or do not compile are dropped, and so is a second mutant with the same cell text.

Sampling under a cap is seeded and stable: each (part, operator) group is shuffled with its
own seed, and parts take turns, each cycling through its operators.
"""

from __future__ import annotations

import ast
import copy
import difflib
import hashlib
import json
import random
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..grading import intake

#: Operators in the order a part cycles through them when sampling.
OPERATORS = ("swap_operands", "constant", "axis", "operator", "reduction", "drop_term", "transpose", "index",
             "remove_call", "swap_args")

_BEGIN = re.compile(r"^\s*#+\s*BEGIN SOLUTION")
_END = re.compile(r"^\s*#+\s*END SOLUTION")


@dataclass(frozen=True)
class Part:
    """A grade cell and the solution cells before it."""

    grade_id: str
    points: float
    cells: tuple[int, ...]  # notebook indices of its solution cells
    definitions: tuple[str, ...]  # top-level functions and classes those cells define


@dataclass(frozen=True)
class Mutant:
    """One small change to one solution cell."""

    id: str
    part: str
    cell: int  # notebook index of the mutated cell
    function: str  # qualified name of the innermost function or class around the change
    operator: str
    description: str
    line: int  # 1-based line of the change in the original cell
    source: str  # the mutated cell, unparsed
    diff: str  # unified diff of the unparsed original cell and the mutant

    def summary(self) -> dict:
        return {"id": self.id, "part": self.part, "cell": self.cell, "function": self.function,
                "operator": self.operator, "description": self.description, "line": self.line, "diff": self.diff}


@dataclass
class Generation:
    """What `generate_mutants` found and kept."""

    parts: list[Part]
    mutants: list[Mutant]  # the sample, ordered by part, cell and line
    candidates: dict[str, dict[str, int]] = field(default_factory=dict)  # part -> operator -> how many existed
    skipped_cells: list[str] = field(default_factory=list)  # cells that did not parse, with the reason


# --------------------------------------------------------------------------- parts


def notebook_parts(notebook: dict) -> list[Part]:
    """The grade cells of a notebook (nbformat JSON), each with the solution cells before it."""
    parts: list[Part] = []
    pending: list[int] = []
    for index, cell in enumerate(notebook["cells"]):
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if cell.get("cell_type") != "code":
            continue
        if meta.get("solution"):
            pending.append(index)
        elif meta.get("grade"):
            names = tuple(name for i in pending for name in _definitions(cell_source(notebook, i)))
            parts.append(Part(meta["grade_id"], float(meta.get("points", 0)), tuple(pending), names))
            pending = []
    return parts


def cell_source(notebook: dict, index: int) -> str:
    return intake.cell_source(notebook["cells"][index])


def _definitions(source: str) -> list[str]:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    return [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]


def solution_regions(source: str) -> list[tuple[int, int]]:
    """1-based inclusive line ranges between the solution markers; the whole cell when it has none."""
    lines = source.splitlines()
    regions, start = [], None
    for number, line in enumerate(lines, 1):
        if _BEGIN.match(line):
            start = number + 1
        elif _END.match(line) and start is not None:
            regions.append((start, number - 1))
            start = None
    return regions or [(1, max(1, len(lines)))]


# --------------------------------------------------------------------------- operators

#: Methods and functions whose dimension argument the `axis` operator moves (positional when first).
DIM_CALLS = {"sum", "mean", "max", "min", "amax", "amin", "argmax", "argmin", "softmax", "log_softmax", "logsumexp",
             "cumsum", "prod", "std", "var", "norm", "cat", "stack", "unsqueeze", "squeeze", "flatten", "all", "any"}
REDUCTION_SWAPS = {"sum": "mean", "mean": "sum", "max": "min", "min": "max", "amax": "amin", "amin": "amax",
                   "argmax": "argmin", "argmin": "argmax", "maximum": "minimum", "minimum": "maximum",
                   "clamp_min": "clamp_max", "clamp_max": "clamp_min", "prod": "sum", "logsumexp": "sum"}
#: Calls whose removal leaves their receiver (methods) or first argument (functions of these modules).
REMOVABLE_METHODS = {"detach", "clone", "contiguous", "exp", "log", "log1p", "sqrt", "rsqrt", "abs", "relu",
                     "sigmoid", "tanh", "clamp", "clamp_min", "clamp_max", "clamp_", "float", "double",
                     "squeeze", "unsqueeze", "flatten", "neg", "square", "copy_"}
REMOVABLE_FUNCTIONS = REMOVABLE_METHODS | {"softmax", "log_softmax", "dropout", "layer_norm"}
MODULES = {"torch", "F", "math", "np", "numpy", "nn", "functional"}
NORMALISERS = {"sum", "mean", "norm", "sqrt", "std", "var", "logsumexp", "max", "amax", "numel", "size", "len"}
TRANSPOSES = {"t", "transpose", "permute", "swapaxes", "swapdims", "movedim"}

_SWAPPABLE = (ast.Sub, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow, ast.MatMult)
_BIN_REPLACE = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult, ast.FloorDiv: ast.Div,
                ast.MatMult: ast.Mult, ast.Pow: ast.Mult, ast.Mod: ast.FloorDiv}
_CMP_REPLACE = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq,
                ast.NotEq: ast.Eq, ast.Is: ast.IsNot, ast.IsNot: ast.Is, ast.In: ast.NotIn, ast.NotIn: ast.In}
_SYMBOL = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//", ast.MatMult: "@",
           ast.Pow: "**", ast.Mod: "%", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==",
           ast.NotEq: "!=", ast.Is: "is", ast.IsNot: "is not", ast.In: "in", ast.NotIn: "not in",
           ast.And: "and", ast.Or: "or"}

Proposal = tuple[str, ast.AST]  # (description, replacement node)


@dataclass(frozen=True)
class Context:
    """Where a node sits: its parent, the field of the parent that holds it, and every node above it."""

    parent: ast.AST | None
    field: str
    ancestors: tuple[ast.AST, ...] = ()  # from the root down to the parent


def _int_value(node: ast.AST) -> int | None:
    """The value of an int literal, negative ones (`-1`) included."""
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        inner = _int_value(node.operand)
        return None if inner is None else -inner
    return None


def _int_node(value: int) -> ast.AST:
    return ast.Constant(value) if value >= 0 else ast.UnaryOp(ast.USub(), ast.Constant(-value))


def _call_name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Call):
        if isinstance(node.func, ast.Attribute):
            return node.func.attr
        if isinstance(node.func, ast.Name):
            return node.func.id
    return None


def _is_module_call(node: ast.Call) -> bool:
    """`torch.exp(x)`, `F.relu(x)`, `torch.nn.functional.softmax(x)`, `math.log(x)`: a function of a module."""
    func = node.func
    if not isinstance(func, ast.Attribute):
        return False
    base = func.value
    while isinstance(base, ast.Attribute):
        if base.attr in MODULES:
            return True
        base = base.value
    return isinstance(base, ast.Name) and base.id in MODULES


def _moved_dim(value: int) -> int:
    if value == -1:
        return -2
    if value < -1:
        return value + 1
    return 1 if value == 0 else value - 1


DIM_KEYWORDS = ("dim", "axis", "dims")
#: Shape arguments where `-1` means "infer this size": changing it only makes the call fail.
SHAPE_CALLS = {"reshape", "view", "expand", "unflatten", "flatten", "new_empty"}


def _owned_elsewhere(literal: ast.AST, above: tuple[ast.AST, ...]) -> bool:
    """Whether a number literal (`1`, or `-1` as a whole) is an index, a dim or a shape's `-1` (not `constant`'s)."""
    parent = above[-1] if above else None
    grand = above[-2] if len(above) > 1 else None
    if isinstance(parent, (ast.Slice, ast.Subscript)) or \
            (isinstance(parent, ast.Tuple) and isinstance(grand, ast.Subscript)):
        return True  # `index`
    if isinstance(parent, ast.keyword) and parent.arg in DIM_KEYWORDS:
        return True  # `axis`
    if isinstance(parent, ast.Tuple):
        return True  # tuple dims and shapes (a tuple of number literals is rarely graded arithmetic)
    if isinstance(parent, ast.Call) and isinstance(parent.func, ast.Attribute) and not _is_module_call(parent):
        if parent.func.attr in DIM_CALLS and parent.args and parent.args[0] is literal:
            return True  # `axis`: `.sum(1)`
        if parent.func.attr in SHAPE_CALLS and _int_value(literal) == -1:
            return True
    return False


def op_swap_operands(node: ast.AST, ctx: Context) -> Iterator[Proposal]:
    if isinstance(node, ast.BinOp) and isinstance(node.op, _SWAPPABLE):
        new = copy.deepcopy(node)
        new.left, new.right = new.right, new.left
        yield f"swap the operands of `{_SYMBOL[type(node.op)]}`", new


def op_constant(node: ast.AST, ctx: Context) -> Iterator[Proposal]:
    if not isinstance(node, ast.Constant) or type(node.value) not in (int, float):
        return
    negative = isinstance(ctx.parent, ast.UnaryOp) and isinstance(ctx.parent.op, ast.USub)
    literal, above = (ctx.parent, ctx.ancestors[:-1]) if negative else (node, ctx.ancestors)
    if _owned_elsewhere(literal, above):
        return
    value = node.value
    if type(value) is int:
        new_value: int | float = value + 1
    else:
        new_value = value / 2 if value != 0 else 1.0
    yield f"constant {value!r} -> {new_value!r}", ast.Constant(new_value)


def op_axis(node: ast.AST, ctx: Context) -> Iterator[Proposal]:
    if isinstance(node, ast.keyword) and node.arg in DIM_KEYWORDS and _int_value(node.value) is not None:
        value, moved = _int_value(node.value), _moved_dim(_int_value(node.value))
        yield f"{node.arg}={value} -> {node.arg}={moved}", ast.keyword(node.arg, _int_node(moved))
    elif isinstance(node, ast.keyword) and node.arg in DIM_KEYWORDS and isinstance(node.value, ast.Tuple) \
            and node.value.elts and all(_int_value(e) is not None for e in node.value.elts):
        for i, element in enumerate(node.value.elts):
            value = _int_value(element)
            new = copy.deepcopy(node)
            new.value.elts[i] = _int_node(_moved_dim(value))
            yield f"{node.arg}: {value} -> {_moved_dim(value)} in the tuple", new
    elif isinstance(node, ast.keyword) and node.arg == "keepdim" and isinstance(node.value, ast.Constant) \
            and isinstance(node.value.value, bool):
        flipped = not node.value.value
        yield f"keepdim={node.value.value} -> {flipped}", ast.keyword("keepdim", ast.Constant(flipped))
    elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in DIM_CALLS \
            and not _is_module_call(node) and node.args and _int_value(node.args[0]) is not None:
        value = _int_value(node.args[0])
        new = copy.deepcopy(node)
        new.args[0] = _int_node(_moved_dim(value))
        yield f"`.{node.func.attr}({value})` -> `.{node.func.attr}({_moved_dim(value)})`", new


def op_operator(node: ast.AST, ctx: Context) -> Iterator[Proposal]:
    if isinstance(node, (ast.BinOp, ast.AugAssign)) and type(node.op) in _BIN_REPLACE:
        new = copy.deepcopy(node)
        new.op = _BIN_REPLACE[type(node.op)]()
        suffix = "=" if isinstance(node, ast.AugAssign) else ""
        yield f"`{_SYMBOL[type(node.op)]}{suffix}` -> `{_SYMBOL[type(new.op)]}{suffix}`", new
    elif isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in _CMP_REPLACE:
        new = copy.deepcopy(node)
        new.ops = [_CMP_REPLACE[type(node.ops[0])]()]
        yield f"`{_SYMBOL[type(node.ops[0])]}` -> `{_SYMBOL[type(new.ops[0])]}`", new
    elif isinstance(node, ast.BoolOp):
        new = copy.deepcopy(node)
        new.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
        yield f"`{_SYMBOL[type(node.op)]}` -> `{_SYMBOL[type(new.op)]}`", new
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and _int_value(node) is None \
            and not (isinstance(node.operand, ast.Constant)):
        yield "drop a unary minus", copy.deepcopy(node.operand)


def op_reduction(node: ast.AST, ctx: Context) -> Iterator[Proposal]:
    name = _call_name(node)
    if name in REDUCTION_SWAPS:
        new = copy.deepcopy(node)
        if isinstance(new.func, ast.Attribute):
            new.func.attr = REDUCTION_SWAPS[name]
        else:
            new.func.id = REDUCTION_SWAPS[name]
        yield f"`{name}` -> `{REDUCTION_SWAPS[name]}`", new


def op_drop_term(node: ast.AST, ctx: Context) -> Iterator[Proposal]:
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        yield "drop the right term of `+`", copy.deepcopy(node.left)
        yield "drop the left term of `+`", copy.deepcopy(node.right)
    elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Sub):
        yield "drop the subtracted term of `-`", copy.deepcopy(node.left)
        yield "drop the first term of `-`", ast.UnaryOp(ast.USub(), copy.deepcopy(node.right))


def _is_transposed(node: ast.AST) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr in ("T", "mT", "mH", "H")) or \
        (_call_name(node) in TRANSPOSES and isinstance(node.func, ast.Attribute))


def op_transpose(node: ast.AST, ctx: Context) -> Iterator[Proposal]:
    if isinstance(node, ast.Attribute) and node.attr in ("T", "mT", "mH", "H") and isinstance(node.ctx, ast.Load):
        yield f"remove `.{node.attr}`", copy.deepcopy(node.value)
    elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in TRANSPOSES \
            and not _is_module_call(node):
        yield f"remove `.{node.func.attr}(...)`", copy.deepcopy(node.func.value)
    elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.MatMult):
        for side in ("left", "right"):
            operand = getattr(node, side)
            if not _is_transposed(operand):
                new = copy.deepcopy(node)
                setattr(new, side, ast.Call(ast.Attribute(copy.deepcopy(operand), "transpose", ast.Load()),
                                            [_int_node(-1), _int_node(-2)], []))
                yield f"transpose the {side} operand of `@`", new


def op_index(node: ast.AST, ctx: Context) -> Iterator[Proposal]:
    if isinstance(node, ast.Subscript):
        elements = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        for position, element in enumerate(elements):
            for description, replacement in _off_by_one(element):
                new = copy.deepcopy(node)
                if isinstance(new.slice, ast.Tuple):
                    new.slice.elts[position] = replacement
                else:
                    new.slice = replacement
                yield description, new
    elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "range" \
            and 1 <= len(node.args) <= 3 and not node.keywords:
        stop = 0 if len(node.args) == 1 else 1
        new = copy.deepcopy(node)
        new.args[stop] = _shifted(new.args[stop], -1)
        yield "range stop - 1", new
        if len(node.args) >= 2:
            new = copy.deepcopy(node)
            new.args[0] = _shifted(new.args[0], +1)
            yield "range start + 1", new


def _shifted(node: ast.AST, delta: int) -> ast.AST:
    value = _int_value(node)
    if value is not None:
        return _int_node(value + delta)
    return ast.BinOp(node, ast.Add() if delta > 0 else ast.Sub(), ast.Constant(abs(delta)))


def _off_by_one(element: ast.AST) -> Iterator[Proposal]:
    value = _int_value(element)
    if value is not None:
        yield f"index {value} -> {value + 1}", _int_node(value + 1)
    elif isinstance(element, ast.Slice):
        if element.lower is not None:
            new = copy.deepcopy(element)
            new.lower = _shifted(new.lower, +1)
            yield "slice start + 1", new
        if element.upper is not None:
            new = copy.deepcopy(element)
            new.upper = _shifted(new.upper, -1)
            yield "slice stop - 1", new


def op_remove_call(node: ast.AST, ctx: Context) -> Iterator[Proposal]:
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        if _is_module_call(node):
            if node.func.attr in REMOVABLE_FUNCTIONS and node.args and not isinstance(node.args[0], ast.Starred):
                yield f"remove the call `{node.func.attr}(...)`", copy.deepcopy(node.args[0])
        elif node.func.attr in REMOVABLE_METHODS:
            yield f"remove `.{node.func.attr}(...)`", copy.deepcopy(node.func.value)
    elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
        right = node.right
        name = _call_name(right) or (right.attr if isinstance(right, ast.Attribute) else None)
        what = f"`{name}`" if name in NORMALISERS else "a divisor"
        yield f"remove a normalisation (division by {what})", copy.deepcopy(node.left)


def op_swap_args(node: ast.AST, ctx: Context) -> Iterator[Proposal]:
    if isinstance(node, ast.Call) and len(node.args) >= 2:
        for i in range(len(node.args) - 1):
            a, b = node.args[i], node.args[i + 1]
            if isinstance(a, ast.Starred) or isinstance(b, ast.Starred) or ast.dump(a) == ast.dump(b):
                continue
            new = copy.deepcopy(node)
            new.args[i], new.args[i + 1] = new.args[i + 1], new.args[i]
            yield f"swap arguments {i + 1} and {i + 2} of `{_call_name(node) or 'call'}`", new


OPERATOR_FUNCTIONS: dict[str, Callable[[ast.AST, Context], Iterator[Proposal]]] = {
    "swap_operands": op_swap_operands, "constant": op_constant, "axis": op_axis, "operator": op_operator,
    "reduction": op_reduction, "drop_term": op_drop_term, "transpose": op_transpose, "index": op_index,
    "remove_call": op_remove_call, "swap_args": op_swap_args,
}
assert tuple(OPERATOR_FUNCTIONS) == OPERATORS


# --------------------------------------------------------------------------- sites and mutants

Path_ = tuple[tuple[str, int | None], ...]


def _walk(node: ast.AST, path: Path_ = (), ctx: Context = Context(None, ""), scope: tuple[str, ...] = ()
          ) -> Iterator[tuple[ast.AST, Path_, Context, tuple[str, ...]]]:
    """Every node with its path from the root, its context and the names of the definitions around it."""
    yield node, path, ctx, scope
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        scope = (*scope, node.name)
    above = (*ctx.ancestors, node)
    for name, value in ast.iter_fields(node):
        if isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, ast.AST):
                    yield from _walk(item, (*path, (name, i)), Context(node, name, above), scope)
        elif isinstance(value, ast.AST):
            yield from _walk(value, (*path, (name, None)), Context(node, name, above), scope)


def _replace(tree: ast.AST, path: Path_, new: ast.AST) -> ast.AST:
    """A copy of `tree` with the node at `path` replaced by `new`."""
    tree = copy.deepcopy(tree)
    parent = tree
    for name, index in path[:-1]:
        value = getattr(parent, name)
        parent = value[index] if index is not None else value
    name, index = path[-1]
    if index is None:
        setattr(parent, name, new)
    else:
        getattr(parent, name)[index] = new
    return ast.fix_missing_locations(tree)


def _inside(node: ast.AST, regions: list[tuple[int, int]]) -> bool:
    start = getattr(node, "lineno", None)
    end = getattr(node, "end_lineno", start)
    if start is None:
        return False
    return any(low <= start and end <= high for low, high in regions)


def _located(node: ast.AST, ctx: Context) -> ast.AST:
    """The nearest node with a line number (a keyword has one; an operator token does not)."""
    return node if hasattr(node, "lineno") else (ctx.parent or node)


def cell_mutants(source: str, *, part: str, cell: int, operators: tuple[str, ...] = OPERATORS) -> list[Mutant]:
    """Every mutant of one solution cell (raises SyntaxError if the cell does not parse)."""
    tree = ast.parse(source)
    original = ast.unparse(tree)
    regions = solution_regions(source)
    seen = {original}
    mutants: list[Mutant] = []
    counts: dict[tuple, int] = {}
    for node, path, ctx, scope in _walk(tree):
        if not path or not scope or not _inside(_located(node, ctx), regions):
            continue
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        for operator in operators:
            for description, replacement in OPERATOR_FUNCTIONS[operator](node, ctx):
                try:
                    mutated = ast.unparse(_replace(tree, path, replacement))
                    compile(mutated, "<mutant>", "exec")
                except (SyntaxError, ValueError, TypeError, RecursionError):
                    continue
                if mutated in seen:
                    continue
                seen.add(mutated)
                diff = "\n".join(difflib.unified_diff(original.splitlines(), mutated.splitlines(), "solution",
                                                      "mutant", n=2, lineterm=""))
                changed = tuple(l for l in diff.splitlines()[2:] if l[:1] in "+-")
                key = (part, ".".join(scope), operator, changed)
                counts[key] = counts.get(key, 0) + 1
                mutants.append(Mutant(
                    id=mutant_id(*key, occurrence=counts[key]), part=part, cell=cell, function=".".join(scope),
                    operator=operator, description=description, line=_located(node, ctx).lineno, source=mutated,
                    diff=diff))
    return mutants


def mutant_id(part: str, function: str, operator: str, changed: tuple[str, ...], *, occurrence: int = 1) -> str:
    """Stable across runs and unrelated edits: the part, the function, the operator and the changed lines."""
    text = "\0".join([part, function, operator, *changed, str(occurrence)])
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def generate_mutants(notebook: dict, *, seed: int = 0, max_mutants: int | None = None,
                     parts: list[str] | None = None, operators: tuple[str, ...] = OPERATORS) -> Generation:
    """The mutants of a notebook's parts (all, or a seeded sample of at most `max_mutants`)."""
    all_parts = notebook_parts(notebook)
    if parts:
        unknown = sorted(set(parts) - {p.grade_id for p in all_parts})
        if unknown:
            known = ", ".join(p.grade_id for p in all_parts)
            raise ValueError(f"unknown part(s) {', '.join(unknown)} (grade cells: {known})")
        all_parts = [p for p in all_parts if p.grade_id in parts]
    generation = Generation(all_parts, [])
    groups: dict[str, dict[str, list[Mutant]]] = {}
    for part in all_parts:
        groups[part.grade_id] = {op: [] for op in operators}
        for index in part.cells:
            try:
                found = cell_mutants(cell_source(notebook, index), part=part.grade_id, cell=index, operators=operators)
            except SyntaxError as exc:
                generation.skipped_cells.append(f"cell {index} ({part.grade_id}): does not parse: {exc.msg}")
                continue
            for mutant in found:
                groups[part.grade_id][mutant.operator].append(mutant)
        generation.candidates[part.grade_id] = {op: len(found) for op, found in groups[part.grade_id].items()}
    chosen = _sample(groups, seed=seed, cap=max_mutants)
    order = {p.grade_id: i for i, p in enumerate(all_parts)}
    generation.mutants = sorted(chosen, key=lambda m: (order[m.part], m.cell, m.line, m.operator, m.id))
    return generation


def _sample(groups: dict[str, dict[str, list[Mutant]]], *, seed: int, cap: int | None) -> list[Mutant]:
    """Parts take turns; each part cycles through its operators; each group is shuffled with its own seed."""
    queues = {}
    for part, by_operator in groups.items():
        for operator, mutants in by_operator.items():
            shuffled = sorted(mutants, key=lambda m: m.id)
            random.Random(f"{seed}:{part}:{operator}").shuffle(shuffled)
            queues[part, operator] = shuffled
    if cap is None:
        return [m for queue in queues.values() for m in queue]
    chosen: list[Mutant] = []
    turns = {part: 0 for part in groups}
    while len(chosen) < cap:
        progressed = False
        for part, by_operator in groups.items():
            ready = [op for op in by_operator if queues[part, op]]
            if not ready or len(chosen) >= cap:
                continue
            operator = ready[turns[part] % len(ready)]
            turns[part] += 1
            chosen.append(queues[part, operator].pop(0))
            progressed = True
        if not progressed:
            break
    return chosen


def write_mutant(notebook: dict, mutant: Mutant | None, path: Path) -> Path:
    """The notebook with the mutant's cell replaced (None: the notebook as it is), written only if changed."""
    data = copy.deepcopy(notebook)
    if mutant is not None:
        data["cells"][mutant.cell]["source"] = mutant.source
    text = json.dumps(data, ensure_ascii=False, indent=1) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")
    return path
