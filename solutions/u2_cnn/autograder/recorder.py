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
    """Notes forbidden aten operations (by overload-packet name) and autograd activity."""

    def __init__(self, ops: frozenset[str], *, autograd: bool) -> None:
        super().__init__()
        self.ops = ops
        self.autograd = autograd
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
        self.__enter__()
        try:
            return call()
        finally:
            before = self.count
            try:
                torch.empty(0)  # canary: the recorder must still see operations
                self.intact = self.count > before and _get_current_dispatch_mode() is self
            except BaseException:
                self.intact = False
            try:
                self.__exit__(None, None, None)
            except BaseException:  # the mode stack was tampered with
                self.intact = False
            for module, name, original, wrapper in hooks:
                self.intact = self.intact and getattr(module, name) is wrapper
                setattr(module, name, original)

    def report(self) -> dict:
        return {"hits": sorted(self.hits), "autograd": self.autograd_seen, "intact": self.intact}


def recorder_for(spec: object) -> OpRecorder | None:
    """The recorder a request's `watch` field asks for (None when it asks for none or is malformed)."""
    if not isinstance(spec, dict):
        return None
    ops, autograd = spec.get("ops"), spec.get("autograd")
    if not (isinstance(ops, list) and all(isinstance(op, str) for op in ops) and isinstance(autograd, bool)):
        return None
    return OpRecorder(frozenset(ops), autograd=autograd)
