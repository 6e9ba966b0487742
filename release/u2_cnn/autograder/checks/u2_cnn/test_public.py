"""Public checks of Unit 2 (CNNs). Students run these from their notebook; they also grade."""

import pytest
import torch
import torch.nn.functional as F

from autograder.checklib import compare_speed, expect_close, expect_tensor, glyphs, randn, size
from autograder.checks.u2_cnn.common import (
    CONV_SETTINGS, LENET_PARAMETERS, LENET_SHAPES, bce, bn_backward_case, bn_forward_case, bn_parameters,
    build_residual, conv_backward_case, conv_forward_case, conv_inputs, expect_backbone_unchanged,
    expect_module, expect_only_head_trains, expect_scalar_loss, lenet_accuracy, lenet_parameters, load_state,
    pool_backward_case, pool_forward_case, prepare, pretrained_resnet, random_conv_shape, read_state,
)
from autograder.checklib.forbidden import AUTOGRAD, BATCH_NORM, CONV, MAX_POOL
from autograder.errors import CheckFailure
from autograder.remote import drive
from autograder.rules import ByHand

#: What parts 1, 2, 3 and 5 must be written without (the notebook's introduction states the same table).
BY_HAND = [
    ByHand("conv2d", names=("conv2d_forward",), forbid=(CONV, AUTOGRAD),
           instead="`F.unfold` (o `Tensor.unfold`) y un producto de matrices o `einsum`"),
    ByHand("conv2d_backward", names=("conv2d_backward",), forbid=(CONV, AUTOGRAD),
           instead="`F.unfold`, `einsum` o `@`, y `F.fold` (col2im) para $\\partial L/\\partial \\mathbf{X}$"),
    ByHand("maxpool", names=("maxpool2d_forward", "maxpool2d_backward"), forbid=(MAX_POOL, AUTOGRAD),
           instead="`amax`/`argmax` sobre las ventanas de `unfold`, y `F.fold` o `scatter_add_` hacia atrás"),
    ByHand("batchnorm", names=("batchnorm2d_forward", "batchnorm2d_backward"), forbid=(BATCH_NORM, AUTOGRAD),
           instead="`mean` y `var(unbiased=False)` sobre las dimensiones (0, 2, 3), y la fórmula de la parte 5"),
]


@pytest.mark.grade_id("conv2d")
@pytest.mark.points(2)
def test_conv2d_forward_matches_torch(student, device, rng):
    """¿`conv2d_forward` coincide con `F.conv2d` para formas, pasos y rellenos al azar?"""
    for stride, padding in CONV_SETTINGS:
        shape = random_conv_shape(rng, stride, padding)
        x, w, b = conv_inputs(rng, device, shape)
        conv_forward_case(student, x, w, b, stride=shape["stride"], padding=shape["padding"])


@pytest.mark.grade_id("conv2d")
@pytest.mark.points(2)
@pytest.mark.timing(max_ratio=40)
def test_conv2d_forward_is_vectorised(student, device, rng, speed_budget):
    """¿`conv2d_forward` es vectorizada (sin un bucle de Python sobre los píxeles de salida)?"""

    def make_inputs():  # float32, as in training; a 96x96 output costs a per-pixel loop 9216 iterations
        x = randn(rng, 1, 3, 96, 96, device=device, dtype=torch.float32)
        return x, randn(rng, 8, 3, 3, 3, device=device, dtype=torch.float32), randn(rng, 8, device=device,
                                                                                     dtype=torch.float32), 1, 1

    def verify(out, inputs):
        expect_close(out, F.conv2d(*inputs), name="out", hint="compara con `F.conv2d` en float32.")

    compare_speed(student=student.conv2d_forward, reference=F.conv2d, make_inputs=make_inputs, verify=verify,
                  budget=speed_budget, name="conv2d_forward", device=device)


@pytest.mark.grade_id("conv2d_backward")
@pytest.mark.points(3)
def test_conv2d_backward_matches_autograd(student, device, rng):
    """¿`conv2d_backward` da los gradientes de autograd sobre `F.conv2d`, con pasos y rellenos al azar?"""
    for stride, padding in CONV_SETTINGS:
        shape = random_conv_shape(rng, stride, padding)
        x, w, b = conv_inputs(rng, device, shape)
        out = F.conv2d(x, w, b, stride=shape["stride"], padding=shape["padding"])
        conv_backward_case(student, x, w, b, randn(rng, *out.shape, device=device), stride=shape["stride"],
                           padding=shape["padding"])


@pytest.mark.grade_id("maxpool")
@pytest.mark.points(1)
def test_maxpool2d_forward_matches_torch(student, device, rng):
    """¿`maxpool2d_forward` coincide con `F.max_pool2d` (paso por defecto y explícito)?"""
    for kernel_size, stride in [(2, None), (3, None), (2, 1), (3, 2)]:
        x = randn(rng, size(rng, 1, 3), size(rng, 1, 3), size(rng, 6, 9), size(rng, 6, 9), device=device)
        pool_forward_case(student, x, kernel_size, stride)


@pytest.mark.grade_id("maxpool")
@pytest.mark.points(2)
def test_maxpool2d_backward_matches_autograd(student, device, rng):
    """¿`maxpool2d_backward` manda cada gradiente a la posición del máximo de su ventana?"""
    for kernel_size in (2, 3):
        x = randn(rng, size(rng, 1, 3), size(rng, 1, 3), 2 * kernel_size, 3 * kernel_size, device=device)
        dout = randn(rng, *F.max_pool2d(x, kernel_size).shape, device=device)
        pool_backward_case(student, x, dout, kernel_size, None)


@pytest.mark.grade_id("batchnorm")
@pytest.mark.points(1)
def test_batchnorm_training_forward(student, device, rng):
    """¿`batchnorm2d_forward` en entrenamiento normaliza con el lote y actualiza las estadísticas como PyTorch?"""
    C = size(rng, 1, 4)
    x = randn(rng, size(rng, 2, 5), C, size(rng, 2, 5), size(rng, 2, 5), device=device, scale=2.0) + 1.0
    bn_forward_case(student, x, bn_parameters(rng, C, device), training=True)


@pytest.mark.grade_id("batchnorm")
@pytest.mark.points(1)
def test_batchnorm_eval_uses_running_statistics(student, device, rng):
    """¿En evaluación `batchnorm2d_forward` usa las estadísticas móviles y las deja como estaban?"""
    C = size(rng, 1, 4)
    x = randn(rng, size(rng, 1, 5), C, size(rng, 1, 5), size(rng, 1, 5), device=device)
    bn_forward_case(student, x, bn_parameters(rng, C, device), training=False)


@pytest.mark.grade_id("batchnorm")
@pytest.mark.points(1)
def test_batchnorm_running_statistics_over_steps(student, device, rng):
    """¿Las estadísticas móviles siguen a las de PyTorch durante varios pasos (con `momentum=0.3`)?"""
    C = size(rng, 1, 4)
    p = bn_parameters(rng, C, device)
    for step in range(1, 6):
        x = randn(rng, 3, C, 4, 4, device=device, scale=1.0 + step) + step
        p["running_mean"], p["running_var"] = bn_forward_case(student, x, p, training=True, momentum=0.3,
                                                              label=f" (paso {step})")


@pytest.mark.grade_id("batchnorm")
@pytest.mark.points(2)
def test_batchnorm_backward_matches_autograd(student, device, rng):
    """¿`batchnorm2d_backward` da los gradientes de autograd sobre `F.batch_norm` en entrenamiento?"""
    N, C, H, W = size(rng, 2, 5), size(rng, 1, 4), size(rng, 2, 5), size(rng, 2, 5)
    x = randn(rng, N, C, H, W, device=device, scale=2.0) + 0.5
    bn_backward_case(student, x, 1 + 0.5 * randn(rng, C, device=device), randn(rng, N, C, H, W, device=device))


@pytest.mark.grade_id("lenet")
@pytest.mark.points(1)
def test_lenet_output_shape(student, device, rng):
    """¿`LeNet()` lleva imágenes $(N, 1, 28, 28)$ a logits $(N, 10)$ en float32?"""
    model = expect_module(student.LeNet(), name="LeNet()")
    model.to(device)
    for N in (1, 5):
        x = randn(rng, N, 1, 28, 28, device=device, dtype=torch.float32)
        expect_tensor(model(x), name=f"LeNet()(x) con N={N}", shape=(N, 10), dtype=torch.float32, device=device)


@pytest.mark.grade_id("lenet")
@pytest.mark.points(1)
def test_lenet_parameter_count(student):
    """¿`LeNet` tiene las capas de d2l, con sus 61 706 parámetros?"""
    parameters = lenet_parameters(student, expect_module(student.LeNet(), name="LeNet()"))
    count = sum(t.numel() for t in parameters.values())
    if count != LENET_PARAMETERS:  # the shapes were checked in order; this guards the sum itself
        raise CheckFailure(f"`LeNet` tiene {count} parámetros y se esperaban {LENET_PARAMETERS} ({LENET_SHAPES}).")


@pytest.mark.grade_id("lenet")
@pytest.mark.points(3)
@pytest.mark.time_limit(120)
def test_lenet_learns_glyphs(student, device, rng):
    """¿Tu `LeNet`, entrenada con Adam (300 pasos, o 600 si arranca lento), acierta al menos el 80 % de las imágenes
    nuevas?"""
    model = expect_module(student.LeNet(), name="LeNet()")
    model.to(device)

    def measure(X_test: torch.Tensor, y_test: torch.Tensor) -> float:  # only the images travel, not the labels
        model.eval()
        logits = expect_tensor(model(X_test.to(device)), name="LeNet()(x)", shape=(1000, 10), device=device)
        return float((logits.detach().argmax(dim=1).cpu() == y_test).double().mean())

    lenet_accuracy(student, model, rng, device, measure, what="Tu `LeNet`")


@pytest.mark.grade_id("residual")
@pytest.mark.points(1)
def test_residual_shapes_and_parameters(student, device, rng):
    """¿`Residual` tiene las capas de d2l y da la forma de salida correcta, con y sin convolución $1\\times 1$?"""
    for c_in, c_out, use_1x1conv, stride in [(3, 3, False, 1), (3, 6, True, 2), (4, 5, True, 1)]:
        block, _, what = build_residual(student, c_in, c_out, use_1x1conv, stride, device)
        x = randn(rng, 2, c_in, 7, 6, device=device)
        expect_tensor(block(x), name=f"{what}(x)", shape=(2, c_out, (7 - 1) // stride + 1, (6 - 1) // stride + 1),
                      dtype=torch.float64, device=device)


@pytest.mark.grade_id("residual")
@pytest.mark.points(2)
def test_residual_adds_the_shortcut_before_the_relu(student, device, rng):
    """¿`Residual` suma el atajo a la rama principal y aplica ReLU después de la suma, en `train` y en `eval`?

    With `bn2.weight = 0` the main branch is exactly `bn2.bias`, whatever the convolutions do,
    so the block must return ReLU(shortcut(x) + bn2.bias).
    """
    for c_in, c_out, use_1x1conv, stride in [(3, 3, False, 1), (2, 4, True, 2)]:
        block, state, what = build_residual(student, c_in, c_out, use_1x1conv, stride, device)
        weights = {name: randn(rng, *t.shape, device=device) for name, t in state["parameters"].items()}
        weights["bn2.weight"] = torch.zeros(c_out, dtype=torch.float64, device=device)
        load_state(student, block, weights | state["buffers"], what=f"`{what}`")
        x = randn(rng, 3, c_in, 6, 5, device=device)
        shortcut = F.conv2d(x, weights["conv3.weight"], weights["conv3.bias"], stride=stride) if use_1x1conv else x
        expected = torch.relu(shortcut + weights["bn2.bias"].view(1, -1, 1, 1))
        for mode in ("train", "eval"):
            getattr(block, mode)()
            expect_close(block(x), expected, name=f"{what}(x) en modo {mode}",
                         hint="la salida es $\\mathrm{ReLU}(\\text{rama principal} + \\text{atajo}(x))$: la ReLU "
                              "va después de la suma; el atajo es `conv3` (1x1, con `stride`) si `use_1x1conv`, y si "
                              "no, $x$ mismo.")


@pytest.mark.grade_id("fine_tuning")
@pytest.mark.points(2)
def test_fine_tuning_freezes_all_but_a_new_head(student, device):
    """¿`prepare_for_fine_tuning` pone una cabeza `fc` nueva de `num_classes` salidas y congela todo lo demás?"""
    model, pretrained = pretrained_resnet(student, device)
    tuned = prepare(student, model, 4)
    state = read_state(student, tuned, what="el modelo preparado")
    expect_only_head_trains(state["trainable"], fc_in=128, num_classes=4, fc=state["parameters"])
    expect_backbone_unchanged(state["parameters"], pretrained, when="`prepare_for_fine_tuning`")


@pytest.mark.grade_id("fine_tuning")
@pytest.mark.points(2)
def test_fine_tuning_moves_only_the_head(student, device, rng):
    """¿Unos pasos de SGD sobre una tarea nueva cambian la cabeza y dejan la red base como estaba?"""
    model, pretrained = pretrained_resnet(student, device)
    tuned = prepare(student, model, 3)
    before = read_state(student, tuned, what="el modelo preparado")["parameters"]
    X, y = glyphs(rng, 64, size=32, channels=3)
    trainer = drive(student, "make_trainer", tuned, X.to(device), (y % 3).to(device), "sgd", 0.1,
                    label="entrenar el modelo preparado")
    drive(student, "train_steps", trainer, 5, 16, int(torch.randint(0, 2**31, (1,), generator=rng)),
          label="entrenar el modelo preparado")
    after = read_state(student, tuned, what="el modelo entrenado")["parameters"]
    expect_backbone_unchanged(after, pretrained, when="unos pasos de SGD")
    for name in ("fc.weight", "fc.bias"):
        if name not in after or name not in before or torch.equal(after[name], before[name]):
            raise CheckFailure(f"`{name}` no cambió tras 5 pasos de SGD: la cabeza nueva debe entrenar.")


@pytest.mark.grade_id("gan")
@pytest.mark.points(1)
def test_discriminator_loss_matches_bce(student, device, rng):
    """¿`discriminator_loss` es $\\mathrm{BCE}(\\text{reales}, 1) + \\mathrm{BCE}(\\text{falsos}, 0)$ (medias)?"""
    real, fake = randn(rng, size(rng, 2, 8), 1, device=device, scale=3.0), randn(rng, size(rng, 2, 8), 1,
                                                                                   device=device, scale=3.0)
    expect_scalar_loss(student.discriminator_loss(real, fake), bce(real, 1.0) + bce(fake, 0.0),
                       name="discriminator_loss")


@pytest.mark.grade_id("gan")
@pytest.mark.points(1)
def test_generator_loss_matches_bce(student, device, rng):
    """¿`generator_loss` es $\\mathrm{BCE}(\\text{falsos}, 1)$ promediada?"""
    fake = randn(rng, size(rng, 2, 8), 1, device=device, scale=3.0)
    expect_scalar_loss(student.generator_loss(fake), bce(fake, 1.0), name="generator_loss")
