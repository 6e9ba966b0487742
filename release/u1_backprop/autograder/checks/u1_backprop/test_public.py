"""Public checks of Unit 1 (backprop). Students run these from their notebook; they also grade."""

import pytest
import torch

from autograder.checklib import (
    compare_speed, expect_close, expect_sequence, expect_tensor, randint, randn, size, spiral,
)
from autograder.checks.u1_backprop.common import (
    Dual, cross_entropy_case, expect_trajectory, expect_value_graph, linear_case, net_case, random_params,
    read_params, reference_scores, relu_case,
)
from autograder.checklib.forbidden import AUTOGRAD, CDIST, CROSS_ENTROPY, OPTIM, SOFTMAX
from autograder.errors import CheckFailure
from autograder.remote import call_each
from autograder.rules import ByHand

#: What each part must be written without (the notebook's introduction states the same table).
BY_HAND = [
    ByHand("linear", names=("linear_forward", "linear_backward"), forbid=(AUTOGRAD,),
           instead="la regla de la cadena escrita a mano: $\\mathbf{G}\\mathbf{W}^\\top$, $\\mathbf{X}^\\top\\mathbf{G}$ "
                   "y la suma de $\\mathbf{G}$ por filas"),
    ByHand("relu", names=("relu_forward", "relu_backward"), forbid=(AUTOGRAD,),
           instead="`dout` por la máscara `x > 0`"),
    ByHand("softmax", names=("softmax",), forbid=(SOFTMAX,), instead="resta el máximo, `exp` y divide por la suma"),
    ByHand("cross_entropy", names=("softmax_cross_entropy",), forbid=(CROSS_ENTROPY, SOFTMAX, AUTOGRAD),
           instead="*log-sum-exp* para la pérdida y $(\\mathbf{P} - \\mathbf{Y})/N$ para el gradiente"),
    ByHand("two_layer_net", names=("TwoLayerNet",), forbid=(AUTOGRAD,),
           instead="tus funciones de las partes 2 y 3, encadenadas hacia atrás"),
    ByHand("optim", names=("sgd_momentum", "adam"), forbid=(OPTIM,),
           instead="las fórmulas de la parte 5 con operaciones entre tensores"),
    ByHand("autograd", names=("Value",), forbid=(AUTOGRAD,), instead="números de Python y el módulo `math`"),
    ByHand("vectorized", names=("pairwise_sq_distances",), forbid=(CDIST,),
           instead="$\\|x\\|^2 + \\|y\\|^2 - 2\\,x^\\top y$ con *broadcasting* y `@`"),
]


@pytest.mark.grade_id("linear")
@pytest.mark.points(1)
def test_linear_forward_matches_torch(student, device, rng):
    """¿`linear_forward` calcula $xW + b$?"""
    N, D, M = size(rng, 2, 8), size(rng, 2, 10), size(rng, 2, 6)
    x, W, b = randn(rng, N, D, device=device), randn(rng, D, M, device=device), randn(rng, M, device=device)
    out, _ = expect_sequence(student.linear_forward(x, W, b), 2, name="linear_forward", what="`(out, cache)`")
    expect_close(out, x @ W + b, name="out", hint="la capa afín es `x @ W + b`.")


@pytest.mark.grade_id("linear")
@pytest.mark.points(2)
def test_linear_backward_matches_autograd(student, device, rng):
    """¿`linear_backward` da los mismos gradientes que autograd?"""
    N, D, M = size(rng, 2, 8), size(rng, 2, 10), size(rng, 2, 6)
    linear_case(student, randn(rng, N, D, device=device), randn(rng, D, M, device=device),
                randn(rng, M, device=device), randn(rng, N, M, device=device), forward=False)


@pytest.mark.grade_id("relu")
@pytest.mark.points(1)
def test_relu_forward_matches_torch(student, device, rng):
    """¿`relu_forward` calcula $\\max(0, x)$?"""
    x = randn(rng, size(rng, 2, 8), size(rng, 2, 8), device=device)
    out, _ = expect_sequence(student.relu_forward(x), 2, name="relu_forward", what="`(out, cache)`")
    expect_close(out, torch.relu(x), name="out")


@pytest.mark.grade_id("relu")
@pytest.mark.points(1)
def test_relu_backward_matches_autograd(student, device, rng):
    """¿`relu_backward` deja pasar el gradiente solo donde $x > 0$?"""
    shape = (size(rng, 4, 8), size(rng, 4, 8))  # at least 16 entries: a missing mask cannot pass by luck
    relu_case(student, randn(rng, *shape, device=device), randn(rng, *shape, device=device), forward=False)


@pytest.mark.grade_id("softmax")
@pytest.mark.points(1)
def test_softmax_matches_torch(student, device, rng):
    """¿`softmax` coincide con `torch.softmax` sobre la última dimensión?"""
    logits = randn(rng, size(rng, 2, 8), size(rng, 2, 10), device=device, scale=3.0)
    expect_close(student.softmax(logits), torch.softmax(logits, dim=-1), name="probs")


@pytest.mark.grade_id("softmax")
@pytest.mark.points(1)
def test_softmax_is_stable_for_large_logits(student, device, rng):
    """¿`softmax` es estable con logits del orden de $10^3$?"""
    logits = randn(rng, 4, 6, device=device, scale=1e3)
    expect_close(student.softmax(logits), torch.softmax(logits, dim=-1), name="probs",
                 hint="resta el máximo de cada fila antes de exponenciar; softmax no cambia con esa traslación.")


@pytest.mark.grade_id("cross_entropy")
@pytest.mark.points(1)
def test_cross_entropy_loss_matches_torch(student, device, rng):
    """¿`softmax_cross_entropy` da la pérdida media de `F.cross_entropy` como tensor escalar?"""
    N, C = size(rng, 2, 10), size(rng, 2, 7)
    logits, y = randn(rng, N, C, device=device, scale=2.0), randint(rng, 0, C, N, device=device)
    loss, _ = expect_sequence(student.softmax_cross_entropy(logits, y), 2, name="softmax_cross_entropy",
                              what="`(loss, dlogits)`")
    expect_close(loss, torch.nn.functional.cross_entropy(logits, y), name="loss",
                 hint="devuelve un tensor de 0 dimensiones con el promedio sobre el lote.")


@pytest.mark.grade_id("cross_entropy")
@pytest.mark.points(2)
def test_cross_entropy_gradient_matches_autograd(student, device, rng):
    """¿`dlogits` coincide con el gradiente de autograd?"""
    N, C = size(rng, 2, 10), size(rng, 2, 7)
    cross_entropy_case(student, randn(rng, N, C, device=device, scale=2.0), randint(rng, 0, C, N, device=device),
                       loss_too=False)


@pytest.mark.grade_id("two_layer_net")
@pytest.mark.points(1)
def test_two_layer_net_initialisation(student):
    """¿`TwoLayerNet` crea los parámetros con las formas y escalas pedidas?"""
    D, H, C, scale = 60, 80, 5, 0.1
    net = student.TwoLayerNet(D, H, C, weight_scale=scale)
    params = read_params(net, D=D, H=H, C=C)
    for key in ("b1", "b2"):
        if params[key].abs().max() != 0:
            raise CheckFailure(f"`params['{key}']` debe inicializarse en ceros.")
    for key in ("W1", "W2"):
        std = float(params[key].double().std())
        if not 0.75 * scale <= std <= 1.25 * scale:  # >= 400 samples: about 7 standard errors of slack
            raise CheckFailure(f"`params['{key}']` debe ser `weight_scale * randn(...)`: su desviación "
                               f"estándar es {std:.3g} y se esperaba cerca de {scale}.")


@pytest.mark.grade_id("two_layer_net")
@pytest.mark.points(1)
def test_two_layer_net_scores(student, device, rng):
    """¿`TwoLayerNet.loss(X)` devuelve los puntajes de lineal → ReLU → lineal?"""
    N, D, H, C = size(rng, 2, 8), size(rng, 2, 6), size(rng, 3, 9), size(rng, 2, 5)
    net = student.TwoLayerNet(D, H, C)
    read_params(net, D=D, H=H, C=C)
    params = random_params(rng, D, H, C, device)
    net.params = params
    X = randn(rng, N, D, device=device)
    expect_close(net.loss(X), reference_scores(params, X), name="scores")


@pytest.mark.grade_id("two_layer_net")
@pytest.mark.points(2)
def test_two_layer_net_loss_and_gradients(student, device, rng):
    """¿`TwoLayerNet.loss(X, y)` da la pérdida y los gradientes de autograd (sin regularización)?"""
    N, D, H, C = size(rng, 2, 8), size(rng, 2, 6), size(rng, 3, 9), size(rng, 2, 5)
    net = student.TwoLayerNet(D, H, C, reg=0.0)
    read_params(net, D=D, H=H, C=C)
    net_case(student, net, random_params(rng, D, H, C, device), randn(rng, N, D, device=device),
             randint(rng, 0, C, N, device=device), reg=0.0)


@pytest.mark.grade_id("optim")
@pytest.mark.points(2)
def test_sgd_momentum_follows_torch_sgd(student, device, rng):
    """¿`sgd_momentum` sigue la misma trayectoria que `torch.optim.SGD(momentum=...)`?"""
    shape = (size(rng, 1, 5), size(rng, 1, 5))
    hyper = {"learning_rate": 0.05, "momentum": 0.8}
    gradients = [randn(rng, *shape, device=device) for _ in range(50)]
    expect_trajectory(student.sgd_momentum, torch.optim.SGD, {"lr": 0.05, "momentum": 0.8}, dict(hyper),
                      randn(rng, *shape, device=device), gradients, name="sgd_momentum")


@pytest.mark.grade_id("optim")
@pytest.mark.points(2)
def test_adam_follows_torch_adam(student, device, rng):
    """¿`adam` sigue la misma trayectoria que `torch.optim.Adam`?"""
    shape = (size(rng, 1, 5), size(rng, 1, 5))
    config = {"learning_rate": 0.01, "beta1": 0.8, "beta2": 0.95, "epsilon": 1e-6}
    gradients = [randn(rng, *shape, device=device) for _ in range(50)]
    expect_trajectory(student.adam, torch.optim.Adam, {"lr": 0.01, "betas": (0.8, 0.95), "eps": 1e-6},
                      config, randn(rng, *shape, device=device), gradients, name="adam")


@pytest.mark.grade_id("autograd")
@pytest.mark.points(2)
def test_value_forward_and_backward(student):
    """¿`Value` calcula valores y gradientes como autograd en una expresión con todas las operaciones?"""
    Value = student.Value
    a, b, c = Dual.leaf(Value, 2.0), Dual.leaf(Value, -3.0), Dual.leaf(Value, 0.5)
    d = a * b + c ** 2
    e = (d / a - b).tanh() + (c * 0.5).exp() - (-d).relu()
    e = e + (c - 1.0).relu() * b + (c * 0.5).relu() * a  # relu of a negative input and of one in (0, 1)
    expect_value_graph(e * a, {"a": a, "b": b, "c": c}, what="`(...) * a`")


@pytest.mark.grade_id("vectorized")
@pytest.mark.points(1)
def test_pairwise_distances_match_cdist(student, device, rng):
    """¿`pairwise_sq_distances` coincide con `torch.cdist(X, Y) ** 2`?"""
    N, M, d = size(rng, 2, 20), size(rng, 2, 20), size(rng, 1, 8)
    X, Y = randn(rng, N, d, device=device), randn(rng, M, d, device=device)
    expect_close(student.pairwise_sq_distances(X, Y), torch.cdist(X, Y) ** 2, name="dist2")


@pytest.mark.grade_id("vectorized")
@pytest.mark.points(2)
@pytest.mark.timing(max_ratio=50)
def test_pairwise_distances_are_fast(student, device, rng, speed_budget):
    """¿`pairwise_sq_distances` es vectorizada (sin bucles de Python)?"""

    def make_inputs():
        return randn(rng, 300, 16, device=device), randn(rng, 200, 16, device=device)

    def verify(D, inputs):
        X, Y = inputs
        expect_close(D, torch.cdist(X, Y) ** 2, name="dist2")

    compare_speed(student=student.pairwise_sq_distances, reference=lambda X, Y: torch.cdist(X, Y) ** 2,
                  make_inputs=make_inputs, verify=verify, budget=speed_budget, name="pairwise_sq_distances",
                  device=device)


@pytest.mark.grade_id("training")
@pytest.mark.points(4)
@pytest.mark.time_limit(120)
def test_two_layer_net_learns_spiral(student, device, rng):
    """¿Tu `TwoLayerNet`, entrenada con tu `adam`, llega al 90 % de aciertos en la espiral en 150 pasos?"""
    X, y = spiral(rng, points_per_class=100, classes=3)
    X, y = X.to(device), y.to(device)
    net = student.TwoLayerNet(2, 100, 3, reg=1e-3)
    params = {k: v.to(device=device, dtype=torch.float64) for k, v in read_params(net, D=2, H=100, C=3).items()}
    configs = {k: {"learning_rate": 0.05} for k in params}
    loss, adam = net.loss, student.adam
    for _ in range(150):
        net.params = params
        _, grads = expect_sequence(loss(X, y), 2, name="TwoLayerNet.loss(X, y)", what="`(loss, grads)`")
        if not isinstance(grads, dict) or set(grads) != set(params):
            raise CheckFailure("`grads` debe ser un diccionario con las claves 'W1', 'b1', 'W2' y 'b2'.")
        updates = call_each(adam, [(params[key], grads[key], configs[key]) for key in params])
        for key, update in zip(list(params), updates):
            params[key], configs[key] = expect_sequence(update, 2, name="adam", what="`(next_w, config)`")
            expect_tensor(params[key], name=f"params['{key}']", dtype=torch.float64)
    accuracy = float((reference_scores(params, X).argmax(dim=1) == y).double().mean())
    if accuracy < 0.9:
        raise CheckFailure(
            f"Tras 150 pasos de Adam la red acierta el {100 * accuracy:.0f} % de los puntos de entrenamiento; "
            "se esperaba al menos el 90 %. Revisa los gradientes de `TwoLayerNet.loss` y tu `adam`."
        )
