"""By-hand rules: graded functions and classes that must not use certain torch built-ins.

A unit's public check file declares its rules in a module-level list,

    BY_HAND = [
        ByHand("conv2d", names=("conv2d_forward",), forbid=(CONV, AUTOGRAD),
               instead="`F.unfold` y un producto de matrices"),
    ]

and the engine enforces them for every check run, with two kinds of evidence the
student cannot forge from inside their code:

* what a call actually executed: every call the checks make into a covered name (or
  into an object it returned) runs under an operation recorder at the torch
  dispatcher (`autograder.recorder`), which sees each aten operation however it was
  reached (aliases, helpers, `getattr`) and whether the autograd engine ran it;
* what the source says: the submitted cells are read in the trusted process
  (`autograder.sourcecheck`) for the forbidden names in the covered definitions and
  the helpers they reach, and for attempts to switch the recording off anywhere.

Either evidence costs the rule's grade cell all its points (`grading.scoring`). The
rules are public: the student sees them in the notebook and in every `check(...)`.

`RuleWatch` is the trusted side of one check run: it tells the client which calls to
watch, collects what the worker reports, and judges each rule at the end.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: How runtime evidence was found, as students read it.
RAN = "al llamar a tu código"


@dataclass(frozen=True)
class Forbidden:
    """A torch built-in (or mechanism) that does the graded work, and how to recognise it.

    `ops` are aten overload-packet names seen at the dispatcher ("convolution");
    `functions` are torch functions that reach the dispatcher only as ordinary operations
    (`nn.LSTMCell` on CPU, `clip_grad_norm_`), recorded by where their code lives (see
    `recorder.FunctionWatch`); `names` are identifiers that betray it in the source
    (attributes, imported names, strings); `autograd` forbids automatic differentiation.
    """

    label: str  # short, as the notebooks' rule tables write it: "`F.conv2d`"
    detail: str = ""  # the other spellings it covers, in Spanish: "ni `nn.Conv2d` ..."
    ops: frozenset[str] = frozenset()
    names: frozenset[str] = frozenset()
    autograd: bool = False
    functions: frozenset[str] = frozenset()

    def describe(self) -> str:
        return f"{self.label} ({self.detail})" if self.detail else self.label


@dataclass(frozen=True)
class ByHand:
    """The names a grade cell's student code defines, and what they must be written without."""

    grade_id: str
    names: tuple[str, ...]
    forbid: tuple[Forbidden, ...]
    instead: str = ""  # Spanish hint: what to use instead

    def __post_init__(self) -> None:
        if not self.names or not all(isinstance(n, str) and n.isidentifier() for n in self.names):
            raise ValueError(f"ByHand({self.grade_id!r}): names must be identifiers")
        if not self.forbid or not all(isinstance(f, Forbidden) for f in self.forbid):
            raise ValueError(f"ByHand({self.grade_id!r}): forbid must list Forbidden entries")

    @property
    def title(self) -> str:
        """The rule as a check title: "Regla: `a` y `b` escritas a mano, sin `F.conv2d` ni autograd"."""
        names = _join([f"`{n}`" for n in self.names], "y")
        return f"Regla: {names} a mano, sin {_join([f.label for f in self.forbid], 'ni')}"

    @property
    def ops(self) -> frozenset[str]:
        return frozenset().union(*(f.ops for f in self.forbid))

    @property
    def autograd(self) -> bool:
        return any(f.autograd for f in self.forbid)

    @property
    def functions(self) -> frozenset[str]:
        return frozenset().union(*(f.functions for f in self.forbid))


def _join(items: list[str], last: str) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + f" {last} " + items[-1]


FORBIDDEN, TAMPER, ALTERED, UNREADABLE = "forbidden", "tamper", "altered", "unreadable"


@dataclass(frozen=True)
class Evidence:
    """One reason a rule is broken.

    FORBIDDEN: a forbidden built-in, seen running (`how` is RAN) or in the source;
    TAMPER: something in the source that could get around the recording;
    ALTERED: the worker's report shows the recording was switched off;
    UNREADABLE: the source is too deeply nested to read.
    """

    kind: str
    how: str = ""  # RAN, or where in the source: "en la celda 3, línea 7 (`return F.conv2d(x, w)`)"
    what: str = ""  # "se ejecutó `convolution`" (RAN), or the name or path matched in the source
    forbidden: str = ""  # the Forbidden.label it betrays

    def render(self) -> str:
        if self.kind == FORBIDDEN and self.how == RAN:
            return f"usa {self.forbidden}: {self.what} {self.how}."
        if self.kind == FORBIDDEN:
            return f"usa {self.forbidden}: `{self.what}` {self.how}."
        if self.kind == TAMPER:
            return (f"usa `{self.what}` {self.how}, que permitiría sortear el registro de operaciones con el que "
                    "se verifican las reglas; no se acepta en este notebook.")
        if self.kind == ALTERED:
            return "el registro de operaciones con el que se verifican las reglas se alteró al llamar a tu código."
        return ("tu notebook tiene código demasiado anidado para leerlo, así que no se pueden verificar las "
                "reglas; simplifícalo.")

    def to_dict(self) -> dict:
        return {"kind": self.kind, "how": self.how, "what": self.what, "forbidden": self.forbidden}


PASSED, VIOLATED, NOT_RUN = "passed", "violated", "not_run"


@dataclass
class RuleVerdict:
    rule: ByHand
    status: str  # passed | violated | not_run
    evidence: list[Evidence] = field(default_factory=list)

    @property
    def violated(self) -> bool:
        return self.status == VIOLATED

    def message(self) -> str:
        """What the student reads (Spanish, Markdown)."""
        if self.status == PASSED:
            return ""
        if self.status == NOT_RUN:
            return ("No se pudo verificar: ninguna comprobación llegó a ejecutar tu código sin errores. "
                    "La regla se verifica cuando tu código funciona.")
        lines = [f"- {e.render()}" for e in dict.fromkeys(self.evidence)]
        tail = f" En su lugar: {self.rule.instead}." if self.rule.instead else ""
        return ("\n".join(lines) + f"\n\nPor eso la parte «{self.rule.grade_id}» vale 0 puntos mientras no se cumpla "
                f"la regla.{tail}")

    def to_dict(self) -> dict:
        return {"grade_id": self.rule.grade_id, "names": list(self.rule.names), "status": self.status,
                "evidence": [e.to_dict() for e in self.evidence]}


class RuleWatch:
    """The trusted side of the rules for one check run.

    `spec_for` tells the client what to watch in a call whose objects descend from
    `roots` (the student names they were looked up from); `observe` takes the
    worker's report of that call (untrusted data, validated here); `verdicts` judges
    every rule with the source findings at the end of the run.
    """

    def __init__(self, *, cells: list[tuple[int | str, str]] | None = None) -> None:
        self.cells = cells  # (label shown to students, Python source) in execution order; None: no source
        self.rules: tuple[ByHand, ...] = ()
        self._runtime: dict[ByHand, list[Evidence]] = {}
        self._reported: set[ByHand] = set()

    def use(self, rules: tuple[ByHand, ...]) -> None:
        self.rules = tuple(rules)

    def _covering(self, roots: frozenset[str]) -> list[ByHand]:
        return [rule for rule in self.rules if roots.intersection(rule.names)]

    def spec_for(self, roots: frozenset[str]) -> dict | None:
        rules = self._covering(roots)
        if not rules:
            return None
        spec = {"ops": sorted(frozenset().union(*(r.ops for r in rules))), "autograd": any(r.autograd for r in rules)}
        functions = frozenset().union(*(r.functions for r in rules))
        if functions:
            spec["functions"] = sorted(functions)
        return spec

    def observe(self, roots: frozenset[str], report: object, *, completed: bool) -> None:
        """Record a watched call's report; a missing or malformed one is itself evidence of tampering.

        `completed`: the call returned a value (a rule counts as checked once one did).
        """
        rules = self._covering(roots)
        hits, autograd, intact = _parse_report(report)
        for rule in rules:
            found = self._runtime.setdefault(rule, [])
            if not intact:
                found.append(Evidence(ALTERED, RAN))
                continue
            if completed:
                self._reported.add(rule)
            for forbidden in rule.forbid:
                for op in sorted(hits & forbidden.ops):
                    found.append(Evidence(FORBIDDEN, RAN, f"se ejecutó `{op}`", forbidden.label))
                for function in sorted(hits & forbidden.functions):
                    found.append(Evidence(FORBIDDEN, RAN, f"se llamó a {_function_shown(function)}", forbidden.label))
                if forbidden.autograd and autograd:
                    found.append(Evidence(FORBIDDEN, RAN, "el motor de autograd calculó gradientes", forbidden.label))

    def verdicts(self) -> list[RuleVerdict]:
        from .sourcecheck import scan

        findings = scan(self.cells, self.rules) if self.cells is not None else None
        verdicts = []
        for rule in self.rules:
            evidence = list(self._runtime.get(rule, []))
            if findings is not None:
                evidence += findings.tamper + findings.by_rule.get(rule, [])
            if evidence:
                status = VIOLATED
            else:
                status = PASSED if rule in self._reported else NOT_RUN
            verdicts.append(RuleVerdict(rule, status, evidence))
        return verdicts


def _function_shown(entry: str) -> str:
    """A `Forbidden.functions` entry as students read it: "`torch.lstm_cell`", "`MultiheadAttention.forward`",
    "código de `torch/nn/modules/rnn.py`"."""
    if "/" not in entry:
        return f"`{entry}`"
    file, _, name = entry.partition(":")
    return f"`{name}` (de `{file}`)" if name else f"código de `{file}`"


def _parse_report(report: object) -> tuple[frozenset[str], bool, bool]:
    """(forbidden ops seen, autograd seen, recording intact) from a worker's report."""
    if not isinstance(report, dict):
        return frozenset(), False, False
    hits, autograd, intact = report.get("hits"), report.get("autograd"), report.get("intact")
    if not (isinstance(hits, list) and len(hits) <= 1000 and all(isinstance(h, str) for h in hits)
            and isinstance(autograd, bool) and intact is True):
        return frozenset(), False, False
    return frozenset(h[:200] for h in hits), autograd, True
