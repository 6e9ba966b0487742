"""Hidden checks of Unit 1: edge cases and random structures the public checks do not show."""

import random

import pytest
import torch

from autograder.checklib import expect_close, expect_number, expect_sequence, expect_tensor, randint, randn, size
from autograder.checks.u1_backprop.common import (
    Dual, cross_entropy_case, expect_trajectory, expect_value_graph, linear_case, net_case, random_params,
    read_params, relu_case,
)
from autograder.errors import CheckFailure

pytestmark = pytest.mark.hidden


@pytest.mark.grade_id("linear")
@pytest.mark.points(1)
def test_linear_thin_shapes(student, device, rng):
    """¿La capa lineal funciona con lote de 1 y dimensiones de tamaño 1?"""
    for N, D, M in [(1, 5, 3), (4, 1, 3), (4, 5, 1), (1, 1, 1)]:
        linear_case(student, randn(rng, N, D, device=device), randn(rng, D, M, device=device),
                    randn(rng, M, device=device), randn(rng, N, M, device=device))


@pytest.mark.grade_id("relu")
@pytest.mark.points(1)
def test_relu_any_shape(student, device, rng):
    """¿ReLU funciona con tensores de cualquier forma?"""
    for shape in [(7,), (2, 3, 4), (2, 1, 3, 3)]:
        relu_case(student, randn(rng, *shape, device=device), randn(rng, *shape, device=device))


@pytest.mark.grade_id("softmax")
@pytest.mark.points(1)
def test_softmax_any_shape(student, device, rng):
    """¿`softmax` actúa sobre la última dimensión de tensores de cualquier forma, también con logits grandes?"""
    for shape, scale in [((2, 3, 5), 1e3), ((1, 7), 50.0), ((4, 1), 1.0), ((3, 2, 2, 4), 10.0)]:
        logits = randn(rng, *shape, device=device, scale=scale)
        expect_close(student.softmax(logits), torch.softmax(logits, dim=-1), name="probs")


@pytest.mark.grade_id("cross_entropy")
@pytest.mark.points(1)
def test_cross_entropy_edge_cases(student, device, rng):
    """¿`softmax_cross_entropy` es correcta con lote de 1, dos clases y logits grandes?"""
    for N, C, scale in [(1, 4, 1.0), (6, 2, 1.0), (5, 5, 1e3)]:
        cross_entropy_case(student, randn(rng, N, C, device=device, scale=scale),
                           randint(rng, 0, C, N, device=device))
    loss, _ = expect_sequence(student.softmax_cross_entropy(randn(rng, 3, 4, device=device),
                                                            randint(rng, 0, 4, 3, device=device)),
                              2, name="softmax_cross_entropy", what="`(loss, dlogits)`")
    if loss.dim() != 0:
        raise CheckFailure("`loss` debe ser un tensor de 0 dimensiones (un escalar), no de forma "
                           f"{tuple(loss.shape)}.")


@pytest.mark.grade_id("two_layer_net")
@pytest.mark.points(2)
def test_two_layer_net_regularisation(student, device, rng):
    """¿`TwoLayerNet` suma la regularización L2 a la pérdida y a los gradientes de los pesos?"""
    N, D, H, C = size(rng, 3, 9), size(rng, 2, 6), size(rng, 3, 9), size(rng, 2, 5)
    reg = 0.7
    net = student.TwoLayerNet(D, H, C, reg=reg)
    read_params(net, D=D, H=H, C=C)
    net_case(student, net, random_params(rng, D, H, C, device), randn(rng, N, D, device=device),
             randint(rng, 0, C, N, device=device), reg=reg)


@pytest.mark.grade_id("two_layer_net")
@pytest.mark.points(1)
def test_two_layer_net_batch_of_one(student, device, rng):
    """¿`TwoLayerNet.loss` funciona con un lote de un solo ejemplo?"""
    D, H, C = 3, 4, 2
    net = student.TwoLayerNet(D, H, C, reg=0.1)
    read_params(net, D=D, H=H, C=C)
    net_case(student, net, random_params(rng, D, H, C, device), randn(rng, 1, D, device=device),
             randint(rng, 0, C, 1, device=device), reg=0.1)


@pytest.mark.grade_id("optim")
@pytest.mark.points(1)
def test_optimizers_default_config(student, device, rng):
    """¿Con `config=None` los optimizadores usan los valores por defecto del enunciado?"""
    w, g = randn(rng, 3, 2, device=device), randn(rng, 3, 2, device=device)
    config = expect_trajectory(student.sgd_momentum, torch.optim.SGD, {"lr": 1e-2, "momentum": 0.9}, None,
                               w, [g, -g, g], name="sgd_momentum")
    if config.get("learning_rate") != 1e-2 or config.get("momentum") != 0.9 or "velocity" not in config:
        raise CheckFailure("`sgd_momentum` debe guardar 'learning_rate' (1e-2), 'momentum' (0.9) y 'velocity' "
                           "en `config`.")
    config = expect_trajectory(student.adam, torch.optim.Adam, {"lr": 1e-3}, None, w, [g, -g, g], name="adam")
    if expect_number(config.get("t"), name="config['t']") != 3:
        raise CheckFailure("Tras 3 pasos, `config['t']` de `adam` debe valer 3 (empieza en 0 y suma 1 por paso).")


@pytest.mark.grade_id("optim")
@pytest.mark.points(1)
def test_optimizers_minimise_a_quadratic(student, device, rng):
    """¿Los optimizadores siguen a torch al minimizar una cuadrática (gradientes que dependen de `w`)?"""
    n = 4
    Q = randn(rng, n, n, device=device)
    A = Q @ Q.T / n + torch.eye(n, dtype=torch.float64, device=device)
    b = randn(rng, n, device=device)
    for update, optimizer, hyper, config in [
        (student.sgd_momentum, torch.optim.SGD, {"lr": 0.1, "momentum": 0.5}, {"learning_rate": 0.1, "momentum": 0.5}),
        (student.adam, torch.optim.Adam, {"lr": 0.05}, {"learning_rate": 0.05}),
    ]:
        w = randn(rng, n, device=device)
        param = w.clone().requires_grad_()
        reference = optimizer([param], **hyper)
        for _ in range(30):
            w, config = expect_sequence(update(w, A @ w - b, config), 2, name="optimizador",
                                        what="`(next_w, config)`")
            param.grad = (A @ param - b).detach()
            reference.step()
        expect_close(w, param.detach(), name="w (paso 30)")


def apply_op(op: str, a: Dual, b: Dual) -> Dual:
    """One node of a random graph; inputs to exp and denominators are kept in safe ranges."""
    if op == "add":
        return a + b
    if op == "mul":
        return a * b
    if op == "sub":
        return a - b
    if op == "tanh":
        return a.tanh()
    if op == "relu":
        return (a + 0.1).relu()
    if op == "exp":
        return (a * 0.5).tanh().exp()
    if op == "pow":
        return a ** 2
    return a / (b * b + 1.0)


@pytest.mark.grade_id("autograd")
@pytest.mark.points(2)
def test_value_random_graphs(student, rng):
    """¿`Value` acierta valores y gradientes en grafos aleatorios con nodos reutilizados?"""
    picker = random.Random(int(torch.randint(0, 2**31, (1,), generator=rng)))
    Value = student.Value
    for graph in range(4):
        leaves = {f"x{i}": Dual.leaf(Value, picker.uniform(-1.5, 1.5)) for i in range(3)}
        nodes = list(leaves.values())
        for _ in range(8):
            op = picker.choice(["add", "mul", "sub", "tanh", "relu", "exp", "pow", "div"])
            node = apply_op(op, picker.choice(nodes), picker.choice(nodes))
            if abs(float(node.t.detach())) > 5:  # keep magnitudes sane so the tolerance stays meaningful
                node = node.tanh()
            nodes.append(node)
        output = nodes[-1] + nodes[-2] * nodes[len(nodes) // 2]
        expect_value_graph(output, leaves, what=f"el grafo aleatorio {graph + 1}")


@pytest.mark.grade_id("autograd")
@pytest.mark.points(1)
def test_value_reflected_operations(student, rng):
    """¿`Value` admite números a la izquierda (`2 + v`, `1 / v`, ...) y nodos usados dos veces?"""
    Value = student.Value
    x, y = Dual.leaf(Value, 1.25), Dual.leaf(Value, -0.75)
    output = (2 + x) * (3 - y) + 2 * x * x + 1 / (x + 2) - (x - x * y) ** 3 + (-y)
    expect_value_graph(output, {"x": x, "y": y}, what="una expresión con operandos a la izquierda")


@pytest.mark.grade_id("vectorized")
@pytest.mark.points(1)
def test_pairwise_distances_edge_shapes(student, device, rng):
    """¿`pairwise_sq_distances` funciona con un solo punto, dimensión 1 y puntos repetidos?"""
    cases = [(1, 5, 3), (6, 1, 2), (1, 1, 1), (4, 3, 1)]
    for N, M, d in cases:
        X, Y = randn(rng, N, d, device=device), randn(rng, M, d, device=device)
        expect_close(student.pairwise_sq_distances(X, Y), torch.cdist(X, Y) ** 2, name="dist2")
    X = randn(rng, 5, 3, device=device)
    D = student.pairwise_sq_distances(X, X)
    expect_close(D, torch.cdist(X, X) ** 2, name="dist2", rtol=1e-7)
    # Far from the origin in float32 the expansion cancels: without clamping, a point's distance to itself is < 0.
    X = randn(rng, 32, 16, device=device, dtype=torch.float32) + 50
    D = expect_tensor(student.pairwise_sq_distances(X, X), name="dist2", shape=(32, 32), dtype=torch.float32,
                      device=device)
    expect_close(D.double(), torch.cdist(X.double(), X.double()) ** 2, name="dist2", rtol=1e-3)
    if not bool((D >= 0).all()):
        raise CheckFailure("`pairwise_sq_distances` devolvió distancias al cuadrado negativas entre puntos "
                           "repetidos (float32, lejos del origen). Pista: por la cancelación numérica la resta "
                           "puede quedar apenas por debajo de cero; recórtala con `.clamp_min(0)`.")
