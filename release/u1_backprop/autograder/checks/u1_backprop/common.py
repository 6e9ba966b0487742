"""Helpers shared by the public and hidden checks of Unit 1 (released with the public checks).

References are torch built-ins in float64; gradients come from autograd on them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from autograder.checklib import expect_close, expect_sequence, expect_tensor
from autograder.errors import CheckFailure

PARAM_SHAPES = {"W1": ("D", "H"), "b1": ("H",), "W2": ("H", "C"), "b2": ("C",)}


def linear_case(student, x: torch.Tensor, W: torch.Tensor, b: torch.Tensor, dout: torch.Tensor, *,
                forward: bool = True) -> None:
    """`linear_backward` (and, with `forward`, `linear_forward`) against `x @ W + b` and autograd."""
    out, cache = expect_sequence(student.linear_forward(x, W, b), 2, name="linear_forward", what="`(out, cache)`")
    leaves = [t.clone().requires_grad_() for t in (x, W, b)]
    expected = F.linear(leaves[0], leaves[1].T, leaves[2])
    if forward:
        expect_close(out, expected, name="out", hint="la capa afín es `x @ W + b`.")
    expected.backward(dout)
    dx, dW, db = expect_sequence(student.linear_backward(dout, cache), 3, name="linear_backward",
                                 what="`(dx, dW, db)`")
    for name, got, leaf in zip(("dx", "dW", "db"), (dx, dW, db), leaves):
        expect_close(got, leaf.grad, name=name, hint=GRADIENT_HINTS[name])


GRADIENT_HINTS = {
    "dx": "$\\partial L/\\partial x = \\text{dout}\\, W^\\top$.",
    "dW": "$\\partial L/\\partial W = x^\\top\\, \\text{dout}$.",
    "db": "$\\partial L/\\partial b$ suma `dout` sobre el lote (dimensión 0).",
}


def relu_case(student, x: torch.Tensor, dout: torch.Tensor, *, forward: bool = True) -> None:
    """`relu_backward` (and, with `forward`, `relu_forward`) against `torch.relu` and autograd."""
    out, cache = expect_sequence(student.relu_forward(x), 2, name="relu_forward", what="`(out, cache)`")
    leaf = x.clone().requires_grad_()
    expected = torch.relu(leaf)
    if forward:
        expect_close(out, expected, name="out")
    expected.backward(dout)
    expect_close(student.relu_backward(dout, cache), leaf.grad, name="dx",
                 hint="el gradiente pasa solo donde la entrada era positiva.")


def cross_entropy_case(student, logits: torch.Tensor, y: torch.Tensor, *, loss_too: bool = True) -> None:
    """`dlogits` (and, with `loss_too`, the loss) against `F.cross_entropy` and autograd."""
    loss, dlogits = expect_sequence(student.softmax_cross_entropy(logits, y), 2, name="softmax_cross_entropy",
                                    what="`(loss, dlogits)`")
    leaf = logits.clone().requires_grad_()
    expected = F.cross_entropy(leaf, y)
    if loss_too:
        expect_close(loss, expected, name="loss",
                     hint="la pérdida es el promedio (no la suma) de $-\\log p_{y_i}$ sobre el lote.")
    expected.backward()
    expect_close(dlogits, leaf.grad, name="dlogits",
                 hint="$\\partial L/\\partial z = (\\mathrm{softmax}(z) - \\mathrm{onehot}(y)) / N$.")


def random_params(rng: torch.Generator, D: int, H: int, C: int, device: str) -> dict[str, torch.Tensor]:
    from autograder.checklib import randn

    return {"W1": randn(rng, D, H, device=device, scale=0.5), "b1": randn(rng, H, device=device, scale=0.5),
            "W2": randn(rng, H, C, device=device, scale=0.5), "b2": randn(rng, C, device=device, scale=0.5)}


def read_params(net, *, D: int, H: int, C: int) -> dict[str, torch.Tensor]:
    """`net.params` must be a dict with W1 (D, H), b1 (H,), W2 (H, C), b2 (C,)."""
    params = net.params
    if not isinstance(params, dict) or set(params) != set(PARAM_SHAPES):
        raise CheckFailure("`TwoLayerNet.params` debe ser un diccionario con las claves 'W1', 'b1', 'W2' y 'b2'.")
    sizes = {"D": D, "H": H, "C": C}
    for key, dims in PARAM_SHAPES.items():
        expect_tensor(params[key], name=f"params['{key}']", shape=tuple(sizes[d] for d in dims))
    return params


def reference_scores(params: dict[str, torch.Tensor], X: torch.Tensor) -> torch.Tensor:
    return F.relu(X @ params["W1"] + params["b1"]) @ params["W2"] + params["b2"]


def net_case(student, net, params: dict[str, torch.Tensor], X: torch.Tensor, y: torch.Tensor, reg: float) -> None:
    """`net.loss(X, y)` against the float64 reference: loss value and every gradient."""
    net.params = params
    loss, grads = expect_sequence(net.loss(X, y), 2, name="TwoLayerNet.loss(X, y)", what="`(loss, grads)`")
    leaves = {k: v.clone().requires_grad_() for k, v in params.items()}
    expected = F.cross_entropy(reference_scores(leaves, X), y)
    expected = expected + 0.5 * reg * ((leaves["W1"] ** 2).sum() + (leaves["W2"] ** 2).sum())
    expect_close(loss, expected, name="loss",
                 hint="incluye `0.5 * reg * (sum(W1**2) + sum(W2**2))`." if reg else None)
    expected.backward()
    if not isinstance(grads, dict) or set(grads) != set(PARAM_SHAPES):
        raise CheckFailure("`grads` debe ser un diccionario con las claves 'W1', 'b1', 'W2' y 'b2'.")
    for key, leaf in leaves.items():
        hint = "suma `reg * W` al gradiente de cada matriz de pesos." if reg and key.startswith("W") else None
        expect_close(grads[key], leaf.grad, name=f"grads['{key}']", hint=hint)


def expect_trajectory(student_update, torch_optimizer: type, hyper: dict, config: dict | None,
                      w0: torch.Tensor, gradients: list[torch.Tensor], *, name: str) -> dict:
    """Feed the same gradients to the student's update rule and to a torch optimizer, step by step."""
    param = w0.clone().requires_grad_()
    optimizer = torch_optimizer([param], **hyper)
    w = w0.clone()
    for step, g in enumerate(gradients, start=1):
        w, config = expect_sequence(student_update(w, g, config), 2, name=name, what="`(next_w, config)`")
        param.grad = g.clone()
        optimizer.step()
        if not isinstance(config, dict):
            raise CheckFailure(f"`{name}` debe devolver el diccionario `config` actualizado.")
        expect_close(w, param.detach(), name=f"w (paso {step})",
                     hint=f"compara la regla de actualización de `{name}` con la fórmula del enunciado.")
    return config


class Dual:
    """A scalar in the student's `Value` graph and, in parallel, in a torch float64 graph."""

    def __init__(self, student_value, reference: torch.Tensor) -> None:
        self.s = student_value
        self.t = reference

    @classmethod
    def leaf(cls, value_class, data: float) -> "Dual":
        """A leaf: `value_class(data)` (the student's `Value`) and a torch scalar that requires grad."""
        return cls(value_class(data), torch.tensor(data, dtype=torch.float64, requires_grad=True))

    def __add__(self, o): return _dual(self, o, lambda a, b: a + b)
    def __radd__(self, o): return _dual(o, self, lambda a, b: a + b)
    def __sub__(self, o): return _dual(self, o, lambda a, b: a - b)
    def __rsub__(self, o): return _dual(o, self, lambda a, b: a - b)
    def __mul__(self, o): return _dual(self, o, lambda a, b: a * b)
    def __rmul__(self, o): return _dual(o, self, lambda a, b: a * b)
    def __truediv__(self, o): return _dual(self, o, lambda a, b: a / b)
    def __rtruediv__(self, o): return _dual(o, self, lambda a, b: a / b)
    def __pow__(self, k: float): return Dual(self.s ** k, self.t ** k)
    def __neg__(self): return Dual(-self.s, -self.t)
    def relu(self): return Dual(self.s.relu(), torch.relu(self.t))
    def tanh(self): return Dual(self.s.tanh(), torch.tanh(self.t))
    def exp(self): return Dual(self.s.exp(), torch.exp(self.t))


def _dual(a, b, op) -> Dual:
    sa, ta = (a.s, a.t) if isinstance(a, Dual) else (a, a)
    sb, tb = (b.s, b.t) if isinstance(b, Dual) else (b, b)
    return Dual(op(sa, sb), op(ta, tb))


def expect_value_graph(output: Dual, leaves: dict[str, Dual], *, what: str) -> None:
    """The graph's value and every leaf's gradient must match torch autograd."""
    from autograder.checklib import expect_number

    data = expect_number(output.s.data, name=f"{what}.data")
    expected = float(output.t.detach())
    if not abs(data - expected) <= 1e-9 * max(1.0, abs(expected)):
        raise CheckFailure(f"El valor de {what} no coincide con la referencia.",
                           detail=f"Se esperaba {expected:.10g} y se obtuvo {data:.10g}.")
    output.s.backward()
    output.t.backward()
    for name, leaf in leaves.items():
        grad = expect_number(leaf.s.grad, name=f"{name}.grad")
        reference = float(leaf.t.grad) if leaf.t.grad is not None else 0.0
        if not abs(grad - reference) <= 1e-9 * max(1.0, abs(reference)):
            raise CheckFailure(
                f"El gradiente de `{name}` en {what} no coincide con la referencia.",
                detail=f"Se esperaba {reference:.10g} y se obtuvo {grad:.10g}. Pista: si un nodo se usa "
                       "más de una vez, sus gradientes se acumulan con `+=`.",
            )
