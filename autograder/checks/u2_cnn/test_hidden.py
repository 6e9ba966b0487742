"""Hidden checks of Unit 2: edge cases, and the modules against references built from torch layers."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from autograder.checklib import expect_close, expect_tensor, randn
from autograder.checks.u2_cnn.common import (
    LENET_SHAPES, bce, bn_backward_case, bn_forward_case, bn_parameters, build_residual, conv_backward_case,
    conv_forward_case, conv_inputs, expect_module, expect_only_head_trains, expect_scalar_loss, lenet_accuracy,
    lenet_parameters, load_state, pool_backward_case, pool_forward_case, prepare, read_state,
)
from autograder.errors import CheckFailure
from autograder.remote import drive

pytestmark = pytest.mark.hidden

CONV_EDGE_CASES = [  # N, C, F, KH, KW, H, W, stride, padding, bias
    (1, 1, 1, 3, 3, 5, 5, 1, 0, True),     # batch 1, single channel
    (2, 3, 2, 3, 3, 7, 7, 2, 1, False),    # bias None
    (2, 2, 3, 2, 3, 7, 6, 2, 0, True),     # non-square kernel, odd size, a column dropped by the stride
    (1, 2, 2, 5, 5, 5, 5, 1, 0, True),     # kernel as large as the input: a 1x1 output
    (2, 2, 2, 1, 1, 6, 5, 3, 0, True),     # 1x1 kernel with a stride
    (1, 1, 2, 2, 2, 3, 4, 1, 2, False),    # padding wider than half the kernel
    (2, 3, 1, 3, 1, 9, 4, 4, 1, True),     # stride larger than the kernel
]


def conv_edge_inputs(rng, device, case):
    N, C, F_, KH, KW, H, W, stride, padding, bias = case
    shape = {"N": N, "C": C, "F": F_, "KH": KH, "KW": KW, "H": H, "W": W, "stride": stride, "padding": padding}
    return conv_inputs(rng, device, shape, bias=bias), stride, padding


@pytest.mark.grade_id("conv2d")
@pytest.mark.points(2)
def test_conv2d_forward_edge_cases(student, device, rng):
    """¿`conv2d_forward` funciona con lote de 1, sin sesgo, kernels no cuadrados, salida 1x1 y pasos grandes?"""
    for case in CONV_EDGE_CASES:
        (x, w, b), stride, padding = conv_edge_inputs(rng, device, case)
        conv_forward_case(student, x, w, b, stride=stride, padding=padding)


@pytest.mark.grade_id("conv2d_backward")
@pytest.mark.points(3)
def test_conv2d_backward_edge_cases(student, device, rng):
    """¿`conv2d_backward` acierta en los casos borde (sin sesgo, filas que el paso descarta, kernels no cuadrados)?"""
    for case in CONV_EDGE_CASES:
        (x, w, b), stride, padding = conv_edge_inputs(rng, device, case)
        dout = randn(rng, *F.conv2d(x, w, b, stride=stride, padding=padding).shape, device=device)
        conv_backward_case(student, x, w, b, dout, stride=stride, padding=padding)


@pytest.mark.grade_id("maxpool")
@pytest.mark.points(2)
def test_maxpool2d_overlapping_windows_and_odd_sizes(student, device, rng):
    """¿`maxpool2d` acierta con ventanas superpuestas, tamaños impares y lote de 1?"""
    for N, C, H, W, kernel_size, stride in [(2, 2, 7, 6, 3, 1), (1, 3, 7, 9, 2, None), (2, 1, 8, 7, 3, 2),
                                            (1, 1, 5, 5, 5, None), (3, 2, 9, 5, 2, 3)]:
        x = randn(rng, N, C, H, W, device=device)
        pool_forward_case(student, x, kernel_size, stride)
        dout = randn(rng, *F.max_pool2d(x, kernel_size, stride).shape, device=device)
        pool_backward_case(student, x, dout, kernel_size, stride)


@pytest.mark.grade_id("batchnorm")
@pytest.mark.points(2)
def test_batchnorm_edge_cases(student, device, rng):
    """¿`batchnorm2d_forward` acierta con pocos valores por canal, lote de 1, desplazamientos grandes y otro `eps`?"""
    for N, C, H, W, shift, momentum, eps in [(1, 3, 2, 3, 0.0, 0.1, 1e-5), (2, 2, 1, 1, 0.0, 0.5, 1e-5),
                                             (4, 2, 3, 3, 100.0, 0.1, 1e-3), (3, 1, 2, 2, -5.0, 1.0, 0.1)]:
        x = randn(rng, N, C, H, W, device=device) + shift
        p = bn_parameters(rng, C, device)
        for training in (True, False):
            bn_forward_case(student, x, p, training=training, momentum=momentum, eps=eps)


@pytest.mark.grade_id("batchnorm")
@pytest.mark.points(1)
def test_batchnorm_backward_edge_cases(student, device, rng):
    """¿`batchnorm2d_backward` acierta con lote de 1, un solo canal, espacio 1x1 y otro `eps`?"""
    for N, C, H, W, eps in [(1, 2, 3, 2, 1e-5), (5, 1, 1, 1, 1e-5), (2, 3, 2, 2, 0.5)]:
        x = randn(rng, N, C, H, W, device=device, scale=3.0) - 1.0
        bn_backward_case(student, x, randn(rng, C, device=device), randn(rng, N, C, H, W, device=device), eps=eps)


def d2l_lenet() -> nn.Sequential:
    """d2l's LeNet-5 ("Convolutional Neural Networks (LeNet)"): sigmoid activations and average pooling."""
    return nn.Sequential(
        nn.Conv2d(1, 6, kernel_size=5, padding=2), nn.Sigmoid(), nn.AvgPool2d(kernel_size=2, stride=2),
        nn.Conv2d(6, 16, kernel_size=5), nn.Sigmoid(), nn.AvgPool2d(kernel_size=2, stride=2), nn.Flatten(),
        nn.Linear(16 * 5 * 5, 120), nn.Sigmoid(), nn.Linear(120, 84), nn.Sigmoid(), nn.Linear(84, 10))


def load_by_order(reference: nn.Module, parameters: dict[str, torch.Tensor]) -> nn.Module:
    """Copy the student's parameters (d2l's shapes, in order) into the reference's, in the same order."""
    with torch.no_grad():
        for target, value in zip(reference.parameters(), parameters.values()):
            target.copy_(value)
    return reference


@pytest.mark.grade_id("lenet")
@pytest.mark.points(1)
def test_lenet_matches_d2l_reference(student, device, rng):
    """¿`LeNet` calcula lo mismo que la LeNet de d2l con los mismos pesos?"""
    model = expect_module(student.LeNet(), name="LeNet()")
    model.double()
    model.to(device)
    names = list(lenet_parameters(student, model))
    weights = {name: randn(rng, *shape, device=device, scale=0.3) for name, shape in zip(names, LENET_SHAPES)}
    load_state(student, model, weights, what="tu `LeNet`")
    reference = load_by_order(d2l_lenet().double().to(device), weights)
    for N in (1, 4):
        x = randn(rng, N, 1, 28, 28, device=device)
        expect_close(model(x), reference(x), name=f"LeNet()(x) con N={N}",
                     hint="sigmoides tras cada capa salvo la última y *pooling* promedio 2x2 con paso 2, como en d2l.")


@pytest.mark.grade_id("lenet")
@pytest.mark.points(2)
@pytest.mark.time_limit(120)
def test_lenet_trained_weights_classify_in_the_reference(student, device, rng):
    """¿Los pesos que aprende tu `LeNet`, cargados en la LeNet de d2l, clasifican bien imágenes nuevas?"""
    model = expect_module(student.LeNet(), name="LeNet()")
    model.to(device)

    def measure(X_test: torch.Tensor, y_test: torch.Tensor) -> float:
        weights = {k: v.cpu() for k, v in lenet_parameters(student, model).items()}
        reference = load_by_order(d2l_lenet(), weights).eval()
        with torch.no_grad():
            return float((reference(X_test).argmax(dim=1) == y_test).double().mean())

    lenet_accuracy(student, model, rng, device, measure, what="La LeNet de referencia con tus pesos entrenados")


class Residual(nn.Module):
    """d2l's residual block ("Residual Networks (ResNet)"), the reference."""

    def __init__(self, in_channels, out_channels, use_1x1conv=False, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, stride=stride)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1)
        self.conv3 = nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride) if use_1x1conv else None
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)

    def forward(self, X):
        Y = F.relu(self.bn1(self.conv1(X)))
        Y = self.bn2(self.conv2(Y))
        if self.conv3 is not None:
            X = self.conv3(X)
        return F.relu(Y + X)


def random_reference(rng, c_in, c_out, use_1x1conv, stride, device) -> Residual:
    """The reference block in float64 with random weights and running statistics away from their defaults."""
    reference = Residual(c_in, c_out, use_1x1conv, stride).double().to(device)
    with torch.no_grad():
        for name, t in reference.state_dict().items():
            if name.endswith("running_var"):
                t.copy_(0.5 + randn(rng, *t.shape, device=device).abs())
            elif t.is_floating_point():
                t.copy_(randn(rng, *t.shape, device=device, scale=0.5))
    return reference


RESIDUAL_CONFIGS = [(3, 3, False, 1), (2, 5, True, 2), (4, 3, True, 1)]
RESIDUAL_HINT = "conv1 (3x3, `stride`) → bn1 → ReLU → conv2 (3x3) → bn2, más el atajo, y ReLU al final, como en d2l."


@pytest.mark.grade_id("residual")
@pytest.mark.points(2)
def test_residual_matches_reference_in_train_mode(student, device, rng):
    """¿En modo `train`, `Residual` da la salida, los gradientes y las estadísticas de BN del bloque de d2l?"""
    for c_in, c_out, use_1x1conv, stride in RESIDUAL_CONFIGS:
        block, _, what = build_residual(student, c_in, c_out, use_1x1conv, stride, device)
        reference = random_reference(rng, c_in, c_out, use_1x1conv, stride, device)
        load_state(student, block, reference.state_dict(), what=f"`{what}`")
        block.train()
        x = randn(rng, 3, c_in, 7, 5, device=device)
        x_leaf = x.clone().requires_grad_()
        expected = reference.train()(x_leaf)
        dout = randn(rng, *expected.shape, device=device)
        expected.backward(dout)
        result = drive(student, "forward_backward", block, x, dout, label=f"{what}(x).backward(dout)")
        if not isinstance(result, dict) or set(result) != {"out", "dx", "grads"} \
                or not isinstance(result["grads"], dict):
            raise CheckFailure(f"No se pudieron leer la salida y los gradientes de `{what}`.")
        expect_close(result["out"], expected, name=f"{what}(x)", hint=RESIDUAL_HINT)
        expect_close(result["dx"], x_leaf.grad, name="dL/dx")
        for name, p in reference.named_parameters():
            expect_close(result["grads"].get(name), p.grad, name=f"dL/d{name}")
        buffers = read_state(student, block, what=f"`{what}`")["buffers"]
        for name, t in reference.named_buffers():
            if t.is_floating_point():
                expect_close(buffers.get(name), t, name=name, hint="usa `nn.BatchNorm2d` para bn1 y bn2.")


@pytest.mark.grade_id("residual")
@pytest.mark.points(2)
def test_residual_matches_reference_in_eval_mode(student, device, rng):
    """¿En modo `eval`, `Residual` usa las estadísticas móviles como el bloque de d2l, también con lote de 1?"""
    for c_in, c_out, use_1x1conv, stride in RESIDUAL_CONFIGS:
        block, _, what = build_residual(student, c_in, c_out, use_1x1conv, stride, device)
        reference = random_reference(rng, c_in, c_out, use_1x1conv, stride, device).eval()
        load_state(student, block, reference.state_dict(), what=f"`{what}`")
        block.eval()
        for N in (1, 3):
            x = randn(rng, N, c_in, 6, 6, device=device)
            with torch.no_grad():
                expected = reference(x)
            expect_close(block(x), expected, name=f"{what}(x) en modo eval con N={N}", hint=RESIDUAL_HINT)


@pytest.mark.grade_id("fine_tuning")
@pytest.mark.points(2)
def test_fine_tuning_any_torchvision_resnet(student, device, rng):
    """¿`prepare_for_fine_tuning` sirve para cualquier ResNet de torchvision (ResNet-18 completa, 7 clases)?"""
    model = expect_module(drive(student, "build_resnet18", 1000, label="construir una ResNet-18"),
                          name="la ResNet-18")
    model.to(device)
    tuned = prepare(student, model, 7)
    trainable = drive(student, "trainable_parameters", tuned, label="leer qué parámetros entrenan")
    head = {"fc.weight": tuned.fc.weight, "fc.bias": tuned.fc.bias}
    expect_only_head_trains(trainable, fc_in=512, num_classes=7, fc=head)
    tuned.eval()
    expect_tensor(tuned(randn(rng, 2, 3, 32, 32, device=device, dtype=torch.float32)), name="modelo(x)",
                  shape=(2, 7), device=device)


@pytest.mark.grade_id("gan")
@pytest.mark.points(1)
def test_gan_losses_are_stable_for_large_logits(student, device, rng):
    """¿Las pérdidas de la GAN son finitas y correctas con logits del orden de $10^2$?"""
    real, fake = randn(rng, 6, 1, device=device, scale=200.0), randn(rng, 5, 1, device=device, scale=200.0)
    expect_scalar_loss(student.discriminator_loss(real, fake), bce(real, 1.0) + bce(fake, 0.0),
                       name="discriminator_loss")
    expect_scalar_loss(student.generator_loss(fake), bce(fake, 1.0), name="generator_loss")


@pytest.mark.grade_id("gan")
@pytest.mark.points(1)
def test_gan_losses_any_batch_shape(student, device, rng):
    """¿Las pérdidas de la GAN funcionan con lotes de distinto tamaño, lote de 1 y logits de forma $(N,)$?"""
    for real_shape, fake_shape in [((1, 1), (7, 1)), ((5,), (2,)), ((3, 1), (1, 1))]:
        real, fake = randn(rng, *real_shape, device=device), randn(rng, *fake_shape, device=device)
        expect_scalar_loss(student.discriminator_loss(real, fake), bce(real, 1.0) + bce(fake, 0.0),
                           name="discriminator_loss")
        expect_scalar_loss(student.generator_loss(fake), bce(fake, 1.0), name="generator_loss")
