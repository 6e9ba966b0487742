"""The worker side of the by-hand rules: record what a call executes.

A watched request (see `autograder.rules`) runs under `OpRecorder`, a torch dispatch
mode: every aten operation the call executes passes through it, however the student
reached it (an alias, a helper, `getattr`, a module). It notes the forbidden ones,
and whether the autograd engine executed anything (the operation runs inside a
graph task, or the engine's entry point was called: `backward`, `autograd.grad` and
`torch.func` all go through it). After the call a canary operation proves the
recorder was still in place.

The report is untrusted data for the grader: a submission that switches the
recording off is caught by the source check (`autograder.sourcecheck`) in the
trusted process. This module imports torch lazily: the dispatcher imports it only
for watched requests.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.autograd
from torch.utils._python_dispatch import TorchDispatchMode, _get_current_dispatch_mode

_graph_task_id: Callable[[], int] = getattr(torch._C, "_current_graph_task_id", lambda: -1)
RECORD_FUNCTION = "_record_function_enter_new"


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

    def run(self, call: Callable[[], Any]) -> Any:
        """`call()` under the recorder; what it returns or raises passes through unchanged."""
        engine = getattr(torch.autograd, "_engine_run_backward", None)
        if self.autograd and engine is not None:
            def counted(*args: Any, **kwargs: Any) -> Any:
                self.autograd_seen = True
                return engine(*args, **kwargs)

            torch.autograd._engine_run_backward = counted
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
            if self.autograd and engine is not None:
                self.intact = self.intact and torch.autograd._engine_run_backward is counted
                torch.autograd._engine_run_backward = engine

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
