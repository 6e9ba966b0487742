"""Helpers shared by the public and hidden checks of Unit 2 (released with the public checks).

References are torch built-ins in float64 (`F.conv2d`, `F.max_pool2d`, `F.batch_norm`,
`F.binary_cross_entropy_with_logits`) and autograd on them. The student's modules live
in the worker: `drive` runs the engine's drivers there (reading weights, gradients,
training loops), and everything that comes back is verified here.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from autograder.checklib import (
    describe, expect_close, expect_number, expect_sequence, expect_tensor, glyphs, randn, size,
)
from autograder.errors import CheckFailure
from autograder.remote import RemoteRef, drive

# --------------------------------------------------------------------------- convolution

CONV_HINT = ("como en d2l y PyTorch, la «convolución» es una correlación cruzada (no inviertas el kernel); "
             "el relleno `padding` agrega ceros a los cuatro lados y `stride` salta posiciones en alto y ancho.")
CONV_GRADIENT_HINTS = {
    "dx": "cada posición de entrada recibe `dout` por cada ventana que la contiene, ponderado por el peso "
          "correspondiente; descarta el gradiente de las celdas de relleno.",
    "dw": "$\\partial L/\\partial \\mathbf{K}$ (`dw`) correlaciona la entrada (con relleno) con `dout` y suma sobre "
          "el lote.",
    "db": "$\\partial L/\\partial b_o$ suma `dout[:, o]` sobre el lote y las posiciones.",
}


#: (stride, padding) of the public random cases: every run covers no padding, padding and strides above 1.
CONV_SETTINGS = [(1, 0), (1, 1), (2, 1), (3, 2)]


def random_conv_shape(rng: torch.Generator, stride: int, padding: int) -> dict:
    """N of 2 or 3, C, F, a kernel of 2 to 4 per side and an input at least as large (odd sizes included)."""
    KH, KW = size(rng, 2, 4), size(rng, 2, 4)
    return {"N": size(rng, 2, 3), "C": size(rng, 1, 3), "F": size(rng, 1, 4), "KH": KH, "KW": KW,
            "H": size(rng, KH, 9), "W": size(rng, KW, 9), "stride": stride, "padding": padding}


def conv_inputs(rng: torch.Generator, device: str, shape: dict, *, bias: bool = True) -> tuple:
    x = randn(rng, shape["N"], shape["C"], shape["H"], shape["W"], device=device)
    w = randn(rng, shape["F"], shape["C"], shape["KH"], shape["KW"], device=device)
    b = randn(rng, shape["F"], device=device) if bias else None
    return x, w, b


def conv_forward_case(student, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, *, stride: int,
                      padding: int) -> None:
    """`conv2d_forward` against `F.conv2d`."""
    out = student.conv2d_forward(x, w, b, stride=stride, padding=padding)
    expect_close(out, F.conv2d(x, w, b, stride=stride, padding=padding), name="out", hint=CONV_HINT)


def conv_backward_case(student, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, dout: torch.Tensor, *,
                       stride: int, padding: int) -> None:
    """`conv2d_backward` against autograd on `F.conv2d`; `db` must be None when there is no bias."""
    leaves = {"dx": x.clone().requires_grad_(), "dw": w.clone().requires_grad_()}
    if b is not None:
        leaves["db"] = b.clone().requires_grad_()
    F.conv2d(leaves["dx"], leaves["dw"], leaves.get("db"), stride=stride, padding=padding).backward(dout)
    got = expect_sequence(student.conv2d_backward(dout, x, w, b, stride=stride, padding=padding), 3,
                          name="conv2d_backward", what="`(dx, dw, db)`")
    for name, value in zip(("dx", "dw", "db"), got):
        if name not in leaves:
            if value is not None:
                raise CheckFailure("Cuando `b` es `None`, `conv2d_backward` debe devolver `db = None`.")
            continue
        expect_close(value, leaves[name].grad, name=name, hint=CONV_GRADIENT_HINTS[name])


# --------------------------------------------------------------------------- max pooling

POOL_HINT = "el gradiente de cada ventana va entero a la posición del máximo (no se reparte en la ventana)."


def pool_forward_case(student, x: torch.Tensor, kernel_size: int, stride: int | None) -> None:
    kwargs = {"kernel_size": kernel_size} if stride is None else {"kernel_size": kernel_size, "stride": stride}
    expect_close(student.maxpool2d_forward(x, **kwargs), F.max_pool2d(x, kernel_size, stride), name="out",
                 hint="con `stride=None` el paso es igual a `kernel_size`; las filas y columnas que no completan "
                      "una ventana se descartan.")


def pool_backward_case(student, x: torch.Tensor, dout: torch.Tensor, kernel_size: int, stride: int | None) -> None:
    leaf = x.clone().requires_grad_()
    F.max_pool2d(leaf, kernel_size, stride).backward(dout)
    kwargs = {"kernel_size": kernel_size} if stride is None else {"kernel_size": kernel_size, "stride": stride}
    hint = POOL_HINT if stride is None or stride >= kernel_size else (
        POOL_HINT + " Si las ventanas se superponen, una misma entrada acumula (`+=`) el gradiente de todas "
                    "las ventanas donde es el máximo.")
    expect_close(student.maxpool2d_backward(dout, x, **kwargs), leaf.grad, name="dx", hint=hint)


# --------------------------------------------------------------------------- batch normalisation

BN_HINTS = {
    "out": "en entrenamiento normaliza con la media y la varianza **sesgada** del lote (divide por $m = N H W$) "
           "de cada canal; en evaluación, con las estadísticas móviles.",
    "running_mean": "PyTorch actualiza $\\hat\\mu \\leftarrow (1 - \\text{momentum})\\,\\hat\\mu + "
                    "\\text{momentum}\\,\\mu_{\\mathcal{B}}$ (el `momentum` pesa el valor **nuevo**).",
    "running_var": "la varianza móvil usa la varianza **insesgada** del lote, "
                   "$\\frac{m}{m-1}\\sigma^2_{\\mathcal{B}}$, "
                   "con el mismo `momentum` que la media.",
}


def bn_parameters(rng: torch.Generator, C: int, device: str) -> dict[str, torch.Tensor]:
    """gamma, beta and running statistics away from their defaults, so that every one of them matters."""
    return {"gamma": 1 + 0.5 * randn(rng, C, device=device), "beta": randn(rng, C, device=device),
            "running_mean": randn(rng, C, device=device),
            "running_var": 0.5 + randn(rng, C, device=device).abs()}


def bn_forward_case(student, x: torch.Tensor, p: dict, *, training: bool, momentum: float = 0.1,
                    eps: float = 1e-5, label: str = "") -> tuple[torch.Tensor, torch.Tensor]:
    """One call of `batchnorm2d_forward` against `F.batch_norm`; returns the student's new running statistics."""
    running_mean, running_var = p["running_mean"].clone(), p["running_var"].clone()
    expected = F.batch_norm(x, running_mean, running_var, p["gamma"], p["beta"], training=training,
                            momentum=momentum, eps=eps)
    got = expect_sequence(
        student.batchnorm2d_forward(x, p["gamma"], p["beta"], p["running_mean"], p["running_var"],
                                    training=training, momentum=momentum, eps=eps),
        3, name="batchnorm2d_forward", what="`(out, new_running_mean, new_running_var)`")
    for name, value, reference in zip(("out", "running_mean", "running_var"), got,
                                      (expected, running_mean, running_var)):
        hint = BN_HINTS[name] if training or name == "out" else "en evaluación las estadísticas móviles no cambian."
        expect_close(value, reference, name=f"{name}{label}", hint=hint)
    return got[1], got[2]


def bn_backward_case(student, x: torch.Tensor, gamma: torch.Tensor, dout: torch.Tensor, *, eps: float = 1e-5) -> None:
    """`batchnorm2d_backward` against autograd on `F.batch_norm` in training mode."""
    leaves = {"dx": x.clone().requires_grad_(), "dgamma": gamma.clone().requires_grad_(),
              "dbeta": torch.zeros_like(gamma).requires_grad_()}
    F.batch_norm(leaves["dx"], None, None, leaves["dgamma"], leaves["dbeta"], training=True, eps=eps).backward(dout)
    got = expect_sequence(student.batchnorm2d_backward(dout, x, gamma, eps=eps), 3, name="batchnorm2d_backward",
                          what="`(dx, dgamma, dbeta)`")
    hints = {"dx": "la media y la varianza dependen de $x$. Por canal, con $s_c = \\sqrt{\\sigma_c^2 + \\epsilon}$, "
                   "$\\hat x = (x - \\mu_c)/s_c$ y $g = \\gamma_c\\cdot$ `dout`: $\\partial L/\\partial x = "
                   "\\frac{1}{m\\,s_c}\\left(m\\,g - \\sum g - \\hat x \\sum g\\,\\hat x\\right)$ "
                   "(sumas sobre lote, alto y ancho).",
             "dgamma": "$\\partial L/\\partial \\gamma = \\sum$ `dout` $\\cdot\\,\\hat x$ sobre lote, alto y ancho.",
             "dbeta": "$\\partial L/\\partial \\beta = \\sum$ `dout` sobre lote, alto y ancho."}
    for name, value in zip(("dx", "dgamma", "dbeta"), got):
        expect_close(value, leaves[name].grad, name=name, hint=hints[name])


# --------------------------------------------------------------------------- modules in the worker

def read_state(student, model: RemoteRef, *, what: str) -> dict:
    """A module's parameters, which of them train, and its buffers, verified to be plain data."""
    state = drive(student, "module_state", model, label=f"leer los parámetros de {what}")
    if not isinstance(state, dict) or set(state) != {"parameters", "trainable", "buffers"}:
        raise CheckFailure(f"No se pudieron leer los parámetros de {what}.")
    for key in ("parameters", "buffers"):
        if not isinstance(state[key], dict):
            raise CheckFailure(f"No se pudieron leer los parámetros de {what}.")
        for name, value in state[key].items():
            expect_tensor(value, name=f"{what}: {name}")
    trainable = state["trainable"]
    if not isinstance(trainable, dict) or trainable.keys() != state["parameters"].keys() \
            or not all(type(v) is bool for v in trainable.values()):
        raise CheckFailure(f"No se pudieron leer los parámetros de {what}.")
    return state


def load_state(student, model: RemoteRef, state: dict[str, torch.Tensor], *, what: str) -> None:
    drive(student, "load_module_state", model, state, label=f"cargar pesos en {what}")


def expect_module(value: object, *, name: str) -> RemoteRef:
    """A module built or returned by the student's code stays in the worker: it must come back as a ref."""
    if not isinstance(value, RemoteRef):
        raise CheckFailure(f"`{name}` debería ser un `nn.Module`, pero es {describe(value)}.")
    return value


def expect_parameter_shapes(state: dict, expected: dict[str, tuple], *, what: str) -> None:
    """Parameter names and shapes must be exactly `expected` (d2l's names), in any order."""
    got = {name: tuple(t.shape) for name, t in state["parameters"].items()}
    if got != expected:
        missing = sorted(set(expected) - set(got))
        extra = sorted(set(got) - set(expected))
        wrong = sorted(n for n in set(got) & set(expected) if got[n] != expected[n])
        parts = ([f"faltan {', '.join(f'`{n}`' for n in missing)}"] if missing else []) + \
                ([f"sobran {', '.join(f'`{n}`' for n in extra)}"] if extra else []) + \
                [f"`{n}` tiene forma {got[n]} y se esperaba {expected[n]}" for n in wrong]
        raise CheckFailure(f"Los parámetros de {what} no son los esperados: {'; '.join(parts)}.")


def residual_parameter_shapes(c_in: int, c_out: int, use_1x1conv: bool) -> dict[str, tuple]:
    """d2l's names and shapes: conv1, bn1, conv2, bn2 and, with use_1x1conv, conv3 (convolutions with bias)."""
    shapes = {"conv1.weight": (c_out, c_in, 3, 3), "conv1.bias": (c_out,),
              "conv2.weight": (c_out, c_out, 3, 3), "conv2.bias": (c_out,)}
    if use_1x1conv:
        shapes |= {"conv3.weight": (c_out, c_in, 1, 1), "conv3.bias": (c_out,)}
    shapes |= {"bn1.weight": (c_out,), "bn1.bias": (c_out,), "bn2.weight": (c_out,), "bn2.bias": (c_out,)}
    return shapes


def build_residual(student, c_in: int, c_out: int, use_1x1conv: bool, stride: int, device: str) -> tuple:
    """The student's block in float64 on `device`, with its state checked against d2l's names and shapes."""
    what = f"Residual({c_in}, {c_out}, use_1x1conv={use_1x1conv}, stride={stride})"
    block = expect_module(student.Residual(c_in, c_out, use_1x1conv=use_1x1conv, stride=stride), name=what)
    block.double()
    block.to(device)
    state = read_state(student, block, what=f"`{what}`")
    expect_parameter_shapes(state, residual_parameter_shapes(c_in, c_out, use_1x1conv), what=f"`{what}`")
    return block, state, what


# --------------------------------------------------------------------------- LeNet

LENET_SHAPES = [(6, 1, 5, 5), (6,), (16, 6, 5, 5), (16,), (120, 400), (120,), (84, 120), (84,), (10, 84), (10,)]
LENET_PARAMETERS = 61_706
LENET_STEPS, LENET_CHUNK, LENET_BATCH, LENET_LR = 300, 50, 32, 5e-3
LENET_TARGET = 0.8
#: A LeNet of sigmoids may start slowly: one of the solution's trainings in 100 seeds reached 78 % after 300 steps
#: (99.8 % after 300 more), so one below the target trains this many steps more and is measured again. A wrong
#: architecture's weights, in d2l's LeNet, stay near chance however long they train (9-21 % after 600 steps).
LENET_EXTRA_STEPS = 300


def lenet_parameters(student, model: RemoteRef) -> dict[str, torch.Tensor]:
    """The student's LeNet parameters in registration order, which must have d2l's shapes."""
    state = read_state(student, model, what="tu `LeNet`")
    shapes = [tuple(t.shape) for t in state["parameters"].values()]
    if shapes != LENET_SHAPES:
        raise CheckFailure(
            "Los parámetros de `LeNet` no tienen las formas de d2l, en orden: se esperaba "
            f"{LENET_SHAPES} y se obtuvo {shapes[:12]}. Revisa las capas (5x5 con relleno 2, luego 5x5 sin "
            "relleno, 120, 84 y 10 unidades) y que no sean `Lazy...`.")
    return state["parameters"]


def xavier_state(rng: torch.Generator, names: list[str], device: str) -> dict[str, torch.Tensor]:
    """Xavier-uniform weights (as d2l's `init_cnn`) and zero biases, in float32, keyed by the student's names."""
    state = {}
    for name, shape in zip(names, LENET_SHAPES):
        if len(shape) == 1:
            state[name] = torch.zeros(shape)
        else:
            fan_in, fan_out = math.prod(shape[1:]), shape[0] * math.prod(shape[2:])
            bound = math.sqrt(6.0 / (fan_in + fan_out))
            state[name] = (torch.rand(shape, generator=rng) * 2 - 1) * bound
    return {k: v.to(device) for k, v in state.items()}


def lenet_accuracy(student, model: RemoteRef, rng: torch.Generator, device: str,
                   measure: Callable[[torch.Tensor, torch.Tensor], float], *, what: str) -> None:
    """Xavier init, `LENET_STEPS` Adam steps on fresh glyphs, then `measure(X_test, y_test)` on 1000 new ones;
    below `LENET_TARGET`, `LENET_EXTRA_STEPS` more steps and a second measure, which must reach it."""
    names = list(lenet_parameters(student, model))
    load_state(student, model, xavier_state(rng, names, device), what="tu `LeNet`")
    X, y = glyphs(rng, 2000)
    trainer = drive(student, "make_trainer", model, X.to(device), y.to(device), "adam", LENET_LR,
                    label="preparar el entrenamiento de tu `LeNet`")
    X_test, y_test = glyphs(rng, 1000)  # only the images travel; the labels stay here
    _lenet_steps(student, trainer, rng, LENET_STEPS)
    accuracy = measure(X_test, y_test)
    if accuracy >= LENET_TARGET:
        return
    _lenet_steps(student, trainer, rng, LENET_EXTRA_STEPS)
    accuracy = measure(X_test, y_test)
    if not accuracy >= LENET_TARGET:
        raise CheckFailure(
            f"{what} acierta el {100 * accuracy:.0f} % de las imágenes nuevas tras {LENET_STEPS + LENET_EXTRA_STEPS} "
            f"pasos de Adam; se esperaba al menos el {100 * LENET_TARGET:.0f} %. Revisa la arquitectura (sigmoides y "
            "*pooling* promedio, como en d2l).")


def _lenet_steps(student, trainer: RemoteRef, rng: torch.Generator, steps: int) -> None:
    """`steps` training steps in chunks of `LENET_CHUNK` (each a bounded call), every loss finite."""
    for _ in range(steps // LENET_CHUNK):
        seed = int(torch.randint(0, 2**31, (1,), generator=rng))
        losses = drive(student, "train_steps", trainer, LENET_CHUNK, LENET_BATCH, seed, label="entrenar tu `LeNet`")
        if not isinstance(losses, list) or len(losses) != LENET_CHUNK:
            raise CheckFailure("El entrenamiento de tu `LeNet` no devolvió las pérdidas de cada paso.")
        for loss in losses:
            if not math.isfinite(expect_number(loss, name="pérdida")):
                raise CheckFailure("La pérdida del entrenamiento de tu `LeNet` se volvió NaN o infinita.")


# --------------------------------------------------------------------------- fine-tuning

CHECKPOINT = "small_resnet_glyphs.pt"
HEAD = ("fc.weight", "fc.bias")
BN_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def checkpoint_path() -> Path:
    """The pretrained checkpoint: in source/u2_cnn/ of the course, next to the released notebook, or next to
    this file in the student runtime wheel (installed on Colab or a laptop, it carries the released data files)."""
    here = Path(__file__).resolve()
    root = here.parents[3]  # the course, or release/u2_cnn/ when vendored there
    candidates = (root / "source" / "u2_cnn" / CHECKPOINT, root / CHECKPOINT, here.parent / CHECKPOINT)
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(f"{CHECKPOINT} not found in {[str(p) for p in candidates]}")


def pretrained_state() -> dict[str, torch.Tensor]:
    """The checkpoint's weights in float32 (stored as float16), loaded without unpickling code."""
    checkpoint = torch.load(checkpoint_path(), map_location="cpu", weights_only=True)
    return {k: v.float() if v.is_floating_point() else v for k, v in checkpoint["state_dict"].items()}


def pretrained_resnet(student, device: str) -> tuple[RemoteRef, dict[str, torch.Tensor]]:
    """The course's small ResNet built in the worker with the pretrained weights, which travel from here."""
    state = pretrained_state()
    model = drive(student, "build_small_resnet", 10, state, label="construir la ResNet preentrenada")
    model.to(device)
    return expect_module(model, name="la ResNet preentrenada"), {k: v.to(device) for k, v in state.items()}


def prepare(student, model: RemoteRef, num_classes: int) -> RemoteRef:
    tuned = student.prepare_for_fine_tuning(model, num_classes)
    return expect_module(tuned, name="prepare_for_fine_tuning(model, num_classes)")


def expect_only_head_trains(trainable: object, *, fc_in: int, num_classes: int, fc: dict | None = None) -> None:
    """Exactly `fc.weight` and `fc.bias` require grad; `fc`, when given, has the new head's shapes."""
    if not isinstance(trainable, dict) or not all(type(k) is str and type(v) is bool for k, v in trainable.items()):
        raise CheckFailure("No se pudo leer qué parámetros entrenan en el modelo devuelto.")
    if not set(HEAD) <= set(trainable):
        raise CheckFailure("El modelo devuelto no tiene una cabeza `fc` con `weight` y `bias`.")
    frozen_head = [n for n in HEAD if not trainable[n]]
    if frozen_head:
        raise CheckFailure("La cabeza nueva no entrena: `fc.weight` y `fc.bias` deben tener `requires_grad=True`. "
                           "Pista: congela la red base *antes* de reemplazar `fc`.")
    training = sorted(n for n, flag in trainable.items() if flag and n not in HEAD)
    if training:
        raise CheckFailure(f"Solo la cabeza debe entrenar, pero {len(training)} parámetros de la red base tienen "
                           f"`requires_grad=True` (por ejemplo `{training[0]}`). Pista: `p.requires_grad = False` "
                           "para cada `p` en `model.parameters()`.")
    if fc is not None:
        expect_tensor(fc["fc.weight"], name="fc.weight", shape=(num_classes, fc_in))
        expect_tensor(fc["fc.bias"], name="fc.bias", shape=(num_classes,))


def expect_backbone_unchanged(parameters: dict[str, torch.Tensor], pretrained: dict[str, torch.Tensor], *,
                              when: str) -> None:
    """Every parameter but the head still holds the pretrained value, bit for bit."""
    for name, value in pretrained.items():
        if name in HEAD or name.endswith(BN_BUFFERS):  # BN statistics keep updating in train mode
            continue
        if name not in parameters:
            raise CheckFailure(f"Tras {when}, el modelo no tiene el parámetro `{name}` de la ResNet original.")
        got = expect_tensor(parameters[name], name=name, shape=value.shape)
        if not torch.equal(got.to(value.dtype), value):
            raise CheckFailure(f"`{name}` cambió tras {when}: la red base debe conservar los pesos preentrenados.")


# --------------------------------------------------------------------------- GAN losses

def bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


GAN_HINT = ("usa la forma estable $\\mathrm{BCE}(z, 1) = \\log(1 + e^{-z})$, $\\mathrm{BCE}(z, 0) = \\log(1 + e^{z})$ "
            "(`F.softplus` o `F.binary_cross_entropy_with_logits`): los reales llevan etiqueta 1 y los falsos 0 "
            "para el discriminador; el generador quiere que sus falsos se clasifiquen como 1.")


def expect_scalar_loss(value: object, expected: torch.Tensor, *, name: str) -> None:
    loss = expect_tensor(value, name=name)
    if loss.dim() != 0:
        raise CheckFailure(f"`{name}` debe ser un tensor de 0 dimensiones (el promedio), no de forma "
                           f"{tuple(loss.shape)}.")
    expect_close(loss, expected, name=name, hint=GAN_HINT)
