"""The worker side of the by-hand rules: record what a call executes.

A watched request (see `autograder.rules`) runs under `OpRecorder`, a torch dispatch
mode: every aten operation the call executes passes through it, however the student
reached it (an alias, a helper, `getattr`, a module). It notes the forbidden ones, and
whether automatic differentiation ran: an operation executed inside the autograd
engine's graph task, or a call to the entry points every form of it goes through
(`_engine_run_backward` for `.backward()`, `torch.autograd.grad` and `torch.func`'s
reverse mode; `enter_dual_level` for forward mode, `jvp` and `jacfwd`). After the call
a canary operation proves the recorder was still in place, and the entry points must
still be the recorder's.

The report is untrusted data for the grader: a submission that switches the recording
off is caught by the source check (`autograder.sourcecheck`) in the trusted process.
The dispatcher imports this module only for watched requests (the zygote preloads it).
"""

from __future__ import annotations

import sys
from typing import Any, Callable

import torch
import torch.autograd
import torch.autograd.forward_ad
from torch.utils._python_dispatch import TorchDispatchMode, _get_current_dispatch_mode

_graph_task_id: Callable[[], int] = getattr(torch._C, "_current_graph_task_id", lambda: -1)
RECORD_FUNCTION = "_record_function_enter_new"
#: Where every form of automatic differentiation starts (module, attribute), when this torch has it.
AUTOGRAD_ENTRY_POINTS = [(module, name) for module, name in (
    (torch.autograd, "_engine_run_backward"), (torch.autograd.forward_ad, "enter_dual_level"))
    if hasattr(module, name)]


class OpRecorder(TorchDispatchMode):
    """Notes forbidden aten operations (by overload-packet name), calls of forbidden torch functions that
    never reach the dispatcher as one operation (`nn.LSTMCell`, `clip_grad_norm_`: see `FunctionWatch`),
    and autograd activity."""

    def __init__(self, ops: frozenset[str], *, autograd: bool, functions: frozenset[str] = frozenset()) -> None:
        super().__init__()
        self.ops = ops
        self.autograd = autograd
        self.functions = FunctionWatch(functions) if functions else None
        self.hits: set[str] = set()
        self.autograd_seen = False
        self.count = 0
        self.intact = True  # until a call runs: nothing executed, nothing hidden
        self._names: dict[Any, str] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += 1
        name = self._names.get(func)
        if name is None:
            name = self._names[func] = func.overloadpacket.__name__
        if name == RECORD_FUNCTION and args and isinstance(args[0], str):
            name = f"record_function:{args[0].split('#')[0]}"  # e.g. torch.optim's "Optimizer.step"
        if name in self.ops:
            self.hits.add(name)
        if self.autograd and not self.autograd_seen and _graph_task_id() != -1:
            self.autograd_seen = True
        return func(*args, **(kwargs or {}))

    def _counted(self, function: Callable) -> Callable:
        def counted(*args: Any, **kwargs: Any) -> Any:
            self.autograd_seen = True
            return function(*args, **kwargs)

        return counted

    def run(self, call: Callable[[], Any]) -> Any:
        """`call()` under the recorder; what it returns or raises passes through unchanged."""
        hooks = []  # (module, name, original, wrapper)
        if self.autograd:
            for module, name in AUTOGRAD_ENTRY_POINTS:
                original = getattr(module, name)
                hooks.append((module, name, original, self._counted(original)))
                setattr(module, name, hooks[-1][3])
        previous_profile = sys.getprofile()  # a student's own profiler, in the notebook
        try:
            self.__enter__()
            if self.functions is not None:
                sys.setprofile(self.functions.profile)
            return call()
        finally:
            intact = True
            if self.functions is not None:
                intact = sys.getprofile() == self.functions.profile
                sys.setprofile(previous_profile)
                self.hits |= self.functions.hits
            before = self.count
            try:
                torch.empty(0)  # canary: the recorder must still see operations
                intact = intact and self.count > before and _get_current_dispatch_mode() is self
            except BaseException:
                intact = False
            try:
                self.__exit__(None, None, None)
            except BaseException:  # the mode stack was tampered with
                intact = False
            for module, name, original, wrapper in hooks:
                intact = intact and getattr(module, name) is wrapper
                setattr(module, name, original)
            self.intact = intact

    def report(self) -> dict:
        return {"hits": sorted(self.hits), "autograd": self.autograd_seen, "intact": self.intact}


class FunctionWatch:
    """A profile hook that notes calls of forbidden torch functions, by where their code lives.

    Entries: "torch/nn/modules/rnn.py" (any function of that file), "torch/nn/modules/activation.py:
    MultiheadAttention.forward" (one qualified name in it), "torch.lstm_cell" (a builtin of torch). A
    profile hook sees every Python and C call however the function was reached, aliases included.
    """

    def __init__(self, entries: frozenset[str]) -> None:
        self.files = {e for e in entries if "/" in e and ":" not in e}
        self.qualified = {tuple(e.split(":", 1)) for e in entries if "/" in e and ":" in e}
        self.builtins = {e.split(".", 1)[1]: e for e in entries if "/" not in e}
        self.hits: set[str] = set()
        self._codes: dict[Any, str | None] = {}

    def _match(self, code: Any) -> str | None:
        path = code.co_filename.replace("\\", "/")
        for file in self.files:
            if path.endswith(file):
                return file
        for file, name in self.qualified:
            if path.endswith(file) and getattr(code, "co_qualname", code.co_name) == name:
                return f"{file}:{name}"
        return None

    def profile(self, frame: Any, event: str, arg: Any) -> None:
        if event == "call":
            code = frame.f_code
            hit = self._codes.get(code, False)
            if hit is False:
                hit = self._codes[code] = self._match(code)
            if hit:
                self.hits.add(hit)
        elif event == "c_call" and self.builtins:
            entry = self.builtins.get(getattr(arg, "__name__", None))
            if entry and str(getattr(arg, "__module__", "") or "").startswith("torch"):
                self.hits.add(entry)


def recorder_for(spec: object) -> OpRecorder | None:
    """The recorder a request's `watch` field asks for (None when it asks for none or is malformed)."""
    if not isinstance(spec, dict):
        return None
    ops, autograd, functions = spec.get("ops"), spec.get("autograd"), spec.get("functions", [])
    if not (isinstance(ops, list) and all(isinstance(op, str) for op in ops) and isinstance(autograd, bool)
            and isinstance(functions, list) and all(isinstance(f, str) for f in functions)):
        return None
    return OpRecorder(frozenset(ops), autograd=autograd, functions=frozenset(functions))
