"""Unit 2 as graded: the solution earns everything, the release nothing, and each planted bug
loses exactly the checks that should catch it (and those that depend on the buggy function)."""

import json
import shutil
from dataclasses import dataclass, field

import nbformat
import pytest
import torch
from nbclient import NotebookClient

from conftest import REPO, Shortcut, checks_of, copy_course, expect_shortcut_voids, failing_checks, grade, with_cells, write

pytestmark = pytest.mark.slow

CONV_FORWARD = {"test_conv2d_forward_matches_torch", "test_conv2d_forward_edge_cases"}
CONV_BACKWARD = {"test_conv2d_backward_matches_autograd", "test_conv2d_backward_edge_cases"}
BN_RUNNING = {"test_batchnorm_training_forward", "test_batchnorm_running_statistics_over_steps",
              "test_batchnorm_edge_cases"}
RESIDUAL_VALUES = {"test_residual_adds_the_shortcut_before_the_relu", "test_residual_matches_reference_in_train_mode",
                   "test_residual_matches_reference_in_eval_mode"}
FINE_TUNING = {"test_fine_tuning_freezes_all_but_a_new_head", "test_fine_tuning_moves_only_the_head",
               "test_fine_tuning_any_torchvision_resnet"}
DISCRIMINATOR = {"test_discriminator_loss_matches_bce", "test_gan_losses_are_stable_for_large_logits",
                 "test_gan_losses_any_batch_shape"}
GENERATOR = {"test_generator_loss_matches_bce", "test_gan_losses_are_stable_for_large_logits",
             "test_gan_losses_any_batch_shape"}


@dataclass(frozen=True)
class Bug:
    code: str
    must_fail: set[str]
    may_fail: set[str] = field(default_factory=set)


BUGS = {
    "conv_kernel_flipped": Bug(
        "_conv = conv2d_forward\n"
        "def conv2d_forward(x, w, b, stride=1, padding=0):\n"
        "    return _conv(x, w.flip(-2, -1), b, stride, padding)",
        CONV_FORWARD | {"test_conv2d_forward_is_vectorised"}),
    "conv_padding_on_one_side": Bug(
        "_conv = conv2d_forward\n"
        "def conv2d_forward(x, w, b, stride=1, padding=0):\n"
        "    return _conv(F.pad(x, (0, 2 * padding, 0, 2 * padding)), w, b, stride, 0)",
        CONV_FORWARD | {"test_conv2d_forward_is_vectorised"}),
    "conv_stride_ignored": Bug(
        "_conv = conv2d_forward\n"
        "def conv2d_forward(x, w, b, stride=1, padding=0):\n"
        "    return _conv(x, w, b, 1, padding)",
        CONV_FORWARD),
    "conv_loop_over_output_pixels": Bug(
        "def conv2d_forward(x, w, b, stride=1, padding=0):\n"
        "    return conv2d_forward_loops(x, w, b, stride, padding)",
        {"test_conv2d_forward_is_vectorised"}),
    "conv_backward_dw_from_first_example": Bug(
        "_conv_backward = conv2d_backward\n"
        "def conv2d_backward(dout, x, w, b, stride=1, padding=0):\n"
        "    dx, dw, db = _conv_backward(dout, x, w, b, stride, padding)\n"
        "    return dx, _conv_backward(dout[:1], x[:1], w, b, stride, padding)[1], db",
        CONV_BACKWARD),
    "conv_backward_db_despite_no_bias": Bug(
        "_conv_backward = conv2d_backward\n"
        "def conv2d_backward(dout, x, w, b, stride=1, padding=0):\n"
        "    dx, dw, db = _conv_backward(dout, x, w, b, stride, padding)\n"
        "    return dx, dw, dout.sum(dim=(0, 2, 3))",
        {"test_conv2d_backward_edge_cases"}),
    "pool_gradient_spread_over_the_window": Bug(
        "def maxpool2d_backward(dout, x, kernel_size=2, stride=None):\n"
        "    stride = kernel_size if stride is None else stride\n"
        "    N, C, H, W = x.shape\n"
        "    spread = dout.reshape(N * C, 1, -1).expand(-1, kernel_size ** 2, -1) / kernel_size ** 2\n"
        "    return F.fold(spread, (H, W), kernel_size, stride=stride).reshape(N, C, H, W)",
        {"test_maxpool2d_backward_matches_autograd", "test_maxpool2d_overlapping_windows_and_odd_sizes"}),
    "pool_overlaps_overwrite_instead_of_accumulate": Bug(
        "def maxpool2d_backward(dout, x, kernel_size=2, stride=None):\n"
        "    stride = kernel_size if stride is None else stride\n"
        "    N, C, H, W = x.shape\n"
        "    windows = x.unfold(2, kernel_size, stride).unfold(3, kernel_size, stride)\n"
        "    Ho, Wo = windows.shape[2], windows.shape[3]\n"
        "    arg = windows.reshape(N, C, Ho, Wo, -1).argmax(dim=-1)\n"
        "    rows = torch.arange(Ho).view(-1, 1) * stride + arg // kernel_size\n"
        "    cols = torch.arange(Wo).view(1, -1) * stride + arg % kernel_size\n"
        "    dx = torch.zeros(N, C, H * W, dtype=x.dtype)\n"
        "    dx.scatter_(2, (rows * W + cols).reshape(N, C, -1), dout.reshape(N, C, -1))\n"
        "    return dx.reshape(N, C, H, W)",
        {"test_maxpool2d_overlapping_windows_and_odd_sizes"}),
    "pool_default_stride_one": Bug(
        "_pool = maxpool2d_forward\n"
        "def maxpool2d_forward(x, kernel_size=2, stride=None):\n"
        "    return _pool(x, kernel_size, 1 if stride is None else stride)",
        {"test_maxpool2d_forward_matches_torch", "test_maxpool2d_overlapping_windows_and_odd_sizes"}),
    "bn_normalises_with_unbiased_variance": Bug(
        "_bn = batchnorm2d_forward\n"
        "def batchnorm2d_forward(x, gamma, beta, running_mean, running_var, training=True, momentum=0.1, eps=1e-5):\n"
        "    out, rm, rv = _bn(x, gamma, beta, running_mean, running_var, training, momentum, eps)\n"
        "    if training:\n"
        "        mean, var = x.mean(dim=(0, 2, 3), keepdim=True), x.var(dim=(0, 2, 3), keepdim=True)\n"
        "        out = gamma.view(1, -1, 1, 1) * (x - mean) / torch.sqrt(var + eps) + beta.view(1, -1, 1, 1)\n"
        "    return out, rm, rv",
        BN_RUNNING),
    "bn_running_variance_biased_as_in_d2l": Bug(
        "_bn = batchnorm2d_forward\n"
        "def batchnorm2d_forward(x, gamma, beta, running_mean, running_var, training=True, momentum=0.1, eps=1e-5):\n"
        "    out, rm, rv = _bn(x, gamma, beta, running_mean, running_var, training, momentum, eps)\n"
        "    if training:\n"
        "        rv = (1 - momentum) * running_var + momentum * x.var(dim=(0, 2, 3), unbiased=False)\n"
        "    return out, rm, rv",
        BN_RUNNING),
    "bn_momentum_weighs_the_old_value": Bug(
        "_bn = batchnorm2d_forward\n"
        "def batchnorm2d_forward(x, gamma, beta, running_mean, running_var, training=True, momentum=0.1, eps=1e-5):\n"
        "    return _bn(x, gamma, beta, running_mean, running_var, training, 1 - momentum, eps)",
        BN_RUNNING),
    "bn_eval_uses_batch_statistics": Bug(
        "_bn = batchnorm2d_forward\n"
        "def batchnorm2d_forward(x, gamma, beta, running_mean, running_var, training=True, momentum=0.1, eps=1e-5):\n"
        "    out, _, _ = _bn(x, gamma, beta, running_mean, running_var, True, momentum, eps)\n"
        "    _, rm, rv = _bn(x, gamma, beta, running_mean, running_var, training, momentum, eps)\n"
        "    return out, rm, rv",
        {"test_batchnorm_eval_uses_running_statistics", "test_batchnorm_edge_cases"}),
    "bn_backward_ignores_the_batch_statistics": Bug(
        "def batchnorm2d_backward(dout, x, gamma, eps=1e-5):\n"
        "    dims = (0, 2, 3)\n"
        "    std = torch.sqrt(x.var(dim=dims, unbiased=False, keepdim=True) + eps)\n"
        "    x_hat = (x - x.mean(dim=dims, keepdim=True)) / std\n"
        "    return dout * gamma.view(1, -1, 1, 1) / std, (dout * x_hat).sum(dim=dims), dout.sum(dim=dims)",
        {"test_batchnorm_backward_matches_autograd", "test_batchnorm_backward_edge_cases"}),
    "lenet_with_relu_and_max_pooling": Bug(
        "class LeNet(nn.Module):\n"
        "    def __init__(self, num_classes=10):\n"
        "        super().__init__()\n"
        "        self.net = nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),\n"
        "                                 nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),\n"
        "                                 nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),\n"
        "                                 nn.Linear(84, num_classes))\n"
        "    def forward(self, x):\n"
        "        return self.net(x)",
        {"test_lenet_matches_d2l_reference", "test_lenet_trained_weights_classify_in_the_reference"},
        {"test_lenet_learns_glyphs"}),
    "lenet_without_padding": Bug(
        "class LeNet(nn.Module):\n"
        "    def __init__(self, num_classes=10):\n"
        "        super().__init__()\n"
        "        self.net = nn.Sequential(nn.Conv2d(1, 6, 5), nn.Sigmoid(), nn.AvgPool2d(2),\n"
        "                                 nn.Conv2d(6, 16, 5), nn.Sigmoid(), nn.AvgPool2d(2), nn.Flatten(),\n"
        "                                 nn.Linear(256, 120), nn.Sigmoid(), nn.Linear(120, 84), nn.Sigmoid(),\n"
        "                                 nn.Linear(84, num_classes))\n"
        "    def forward(self, x):\n"
        "        return self.net(x)",
        {"test_lenet_parameter_count", "test_lenet_learns_glyphs", "test_lenet_matches_d2l_reference",
         "test_lenet_trained_weights_classify_in_the_reference"}),
    "residual_relu_before_the_addition": Bug(
        "def _forward(self, x):\n"
        "    y = F.relu(self.bn1(self.conv1(x)))\n"
        "    y = F.relu(self.bn2(self.conv2(y)))\n"
        "    return y + (x if self.conv3 is None else self.conv3(x))\n"
        "Residual.forward = _forward",
        RESIDUAL_VALUES),
    "residual_shortcut_ignores_the_stride": Bug(
        "_init = Residual.__init__\n"
        "def _init_without_stride(self, in_channels, out_channels, use_1x1conv=False, stride=1):\n"
        "    _init(self, in_channels, out_channels, use_1x1conv, stride)\n"
        "    if use_1x1conv:\n"
        "        self.conv3 = nn.Conv2d(in_channels, out_channels, kernel_size=1)\n"
        "Residual.__init__ = _init_without_stride",
        {"test_residual_shapes_and_parameters"} | RESIDUAL_VALUES),
    "fine_tuning_backbone_not_frozen": Bug(
        "def prepare_for_fine_tuning(model, num_classes):\n"
        "    model.fc = nn.Linear(model.fc.in_features, num_classes, device=model.fc.weight.device)\n"
        "    return model",
        FINE_TUNING),
    "fine_tuning_head_frozen_too": Bug(
        "def prepare_for_fine_tuning(model, num_classes):\n"
        "    model.fc = nn.Linear(model.fc.in_features, num_classes, device=model.fc.weight.device)\n"
        "    for p in model.parameters():\n"
        "        p.requires_grad = False\n"
        "    return model",
        FINE_TUNING),
    "fine_tuning_keeps_the_old_head": Bug(
        "def prepare_for_fine_tuning(model, num_classes):\n"
        "    for name, p in model.named_parameters():\n"
        "        p.requires_grad = name.startswith('fc.')\n"
        "    return model",
        {"test_fine_tuning_freezes_all_but_a_new_head", "test_fine_tuning_any_torchvision_resnet"}),
    "gan_labels_swapped": Bug(
        "def discriminator_loss(real_logits, fake_logits):\n"
        "    return F.softplus(real_logits).mean() + F.softplus(-fake_logits).mean()",
        DISCRIMINATOR),
    "gan_saturating_generator_loss": Bug(
        "def generator_loss(fake_logits):\n"
        "    return -F.softplus(fake_logits).mean()",
        GENERATOR),
    "gan_halved_as_in_d2l": Bug(
        "_d_loss = discriminator_loss\n"
        "def discriminator_loss(real_logits, fake_logits):\n"
        "    return _d_loss(real_logits, fake_logits) / 2",
        DISCRIMINATOR),
    "gan_unstable_logarithms": Bug(
        "def discriminator_loss(real_logits, fake_logits):\n"
        "    return -torch.log(torch.sigmoid(real_logits)).mean() - torch.log(1 - torch.sigmoid(fake_logits)).mean()\n"
        "def generator_loss(fake_logits):\n"
        "    return -torch.log(torch.sigmoid(fake_logits)).mean()",
        {"test_gan_losses_are_stable_for_large_logits"}),
}


#: Shortcuts: right answers through what a by-hand rule forbids; each must cost exactly the grade cells in `voids`.
SHORTCUTS = {
    "conv_forward_is_f_conv2d": Shortcut(
        "def conv2d_forward(x, w, b, stride=1, padding=0):\n"
        "    return F.conv2d(x, w, b, stride=stride, padding=padding)",
        "`F.conv2d`", {"conv2d"}),
    "conv_forward_through_an_aliased_helper": Shortcut(
        "from torch.nn.functional import conv2d as _c\n"
        "def _helper(*args):\n"
        "    return _c(*args)\n"
        "def conv2d_forward(x, w, b, stride=1, padding=0):\n"
        "    return _helper(x, w, b, stride, padding)",
        "`F.conv2d`", {"conv2d"}),
    "conv_backward_by_autograd_on_a_copy": Shortcut(
        "def conv2d_backward(dout, x, w, b, stride=1, padding=0):\n"
        "    x, w = x.detach().requires_grad_(), w.detach().requires_grad_()\n"
        "    bb = None if b is None else b.detach().requires_grad_()\n"
        "    conv2d_forward(x, w, bb, stride, padding).backward(dout)\n"
        "    return x.grad, w.grad, None if b is None else bb.grad",
        "autograd", {"conv2d_backward"}),
    "conv_backward_by_torch_nn_grad": Shortcut(
        "def conv2d_backward(dout, x, w, b, stride=1, padding=0):\n"
        "    dx = torch.nn.grad.conv2d_input(x.shape, w, dout, stride=stride, padding=padding)\n"
        "    dw = torch.nn.grad.conv2d_weight(x, w.shape, dout, stride=stride, padding=padding)\n"
        "    return dx, dw, None if b is None else dout.sum(dim=(0, 2, 3))",
        "`F.conv2d`", {"conv2d_backward"}),
    "conv_backward_by_torch_func_vjp": Shortcut(
        "def conv2d_backward(dout, x, w, b, stride=1, padding=0):\n"
        "    _, pull = torch.func.vjp(lambda x, w: conv2d_forward(x, w, None, stride, padding), x, w)\n"
        "    dx, dw = pull(dout)\n"
        "    return dx, dw, None if b is None else dout.sum(dim=(0, 2, 3))",
        "autograd", {"conv2d_backward"}),
    "maxpool_forward_is_f_max_pool2d": Shortcut(
        "def maxpool2d_forward(x, kernel_size=2, stride=None):\n"
        "    return F.max_pool2d(x, kernel_size, stride)",
        "`F.max_pool2d`", {"maxpool"}),
    "maxpool_backward_by_autograd": Shortcut(
        "def maxpool2d_backward(dout, x, kernel_size=2, stride=None):\n"
        "    x = x.detach().requires_grad_()\n"
        "    maxpool2d_forward(x, kernel_size, stride).backward(dout)\n"
        "    return x.grad",
        "autograd", {"maxpool"}),
    "batchnorm_forward_is_f_batch_norm": Shortcut(
        "def batchnorm2d_forward(x, gamma, beta, running_mean, running_var, training=True, momentum=0.1, eps=1e-5):\n"
        "    rm, rv = running_mean.clone(), running_var.clone()\n"
        "    out = F.batch_norm(x, rm, rv, gamma, beta, training=training, momentum=momentum, eps=eps)\n"
        "    return out, rm, rv",
        "`F.batch_norm`", {"batchnorm"}),
    "batchnorm_forward_through_layer_norm": Shortcut(
        "_bn = batchnorm2d_forward\n"
        "def batchnorm2d_forward(x, gamma, beta, running_mean, running_var, training=True, momentum=0.1, eps=1e-5):\n"
        "    out, rm, rv = _bn(x, gamma, beta, running_mean, running_var, training, momentum, eps)\n"
        "    if training:\n"
        "        N, C, H, W = x.shape\n"
        "        flat = x.transpose(0, 1).reshape(C, -1)\n"
        "        x_hat = F.layer_norm(flat, (flat.shape[1],), eps=eps).reshape(C, N, H, W).transpose(0, 1)\n"
        "        out = gamma.view(1, -1, 1, 1) * x_hat + beta.view(1, -1, 1, 1)\n"
        "    return out, rm, rv",
        "`F.batch_norm`", {"batchnorm"}),
    "batchnorm_backward_by_autograd_grad": Shortcut(
        "def batchnorm2d_backward(dout, x, gamma, eps=1e-5):\n"
        "    x, gamma = x.detach().requires_grad_(), gamma.detach().requires_grad_()\n"
        "    beta = torch.zeros_like(gamma, requires_grad=True)\n"
        "    mean = x.mean(dim=(0, 2, 3), keepdim=True)\n"
        "    var = x.var(dim=(0, 2, 3), unbiased=False, keepdim=True)\n"
        "    out = gamma.view(1, -1, 1, 1) * (x - mean) / torch.sqrt(var + eps) + beta.view(1, -1, 1, 1)\n"
        "    return torch.autograd.grad(out, (x, gamma, beta), dout)",
        "autograd", {"batchnorm"}),
    "recording_switched_off_anywhere": Shortcut(
        "import torch.utils._python_dispatch", "", {"conv2d", "conv2d_backward", "maxpool", "batchnorm"}),
}

#: Correct solutions in styles that come close to a rule without breaking it: each keeps full marks.
ALTERNATIVES = {
    "conv_forward_through_an_own_helper_named_conv2d": (
        "def conv2d(x, w, b, stride, padding):\n"
        "    N, _, H, W = x.shape\n"
        "    n_filters, _, KH, KW = w.shape\n"
        "    cols = F.unfold(x, (KH, KW), padding=padding, stride=stride)\n"
        "    out = torch.einsum('fk,nkl->nfl', w.reshape(n_filters, -1), cols)\n"
        "    out = out if b is None else out + b.view(1, -1, 1)\n"
        "    return out.reshape(N, n_filters, (H + 2 * padding - KH) // stride + 1, -1)\n"
        "def conv2d_forward(x, w, b, stride=1, padding=0):\n"
        "    return conv2d(x, w, b, stride, padding)"),
    "maxpool_forward_with_a_module_level_alias_in_a_time_magic": (
        "%%time\n"
        "windows_of = torch.Tensor.unfold\n"
        "def maxpool2d_forward(x, kernel_size=2, stride=None):\n"
        "    stride = kernel_size if stride is None else stride\n"
        "    return windows_of(windows_of(x, 2, kernel_size, stride), 3, kernel_size, stride).amax(dim=(-2, -1))"),
}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    root = tmp_path_factory.mktemp("u2")
    course = copy_course(root / "course", source=REPO, assignments=("u2_cnn",))
    for folder in ("release", "solutions"):
        shutil.copytree(REPO / folder / "u2_cnn", course.root / folder / "u2_cnn")
    subs = root / "subs"
    subs.mkdir()
    solution = REPO / "solutions" / "u2_cnn" / "u2_cnn.ipynb"
    shutil.copy(solution, subs / "solution.ipynb")
    shutil.copy(REPO / "release" / "u2_cnn" / "u2_cnn.ipynb", subs / "release.ipynb")
    for name, bug in BUGS.items():
        write(with_cells(solution, bug.code), subs / f"{name}.ipynb")
    for name, shortcut in SHORTCUTS.items():
        write(with_cells(solution, shortcut.code), subs / f"shortcut_{name}.ipynb")
    for name, code in ALTERNATIVES.items():
        write(with_cells(solution, code), subs / f"alternative_{name}.ipynb")
    for example in ("correct", "partial", "broken", "empty"):
        shutil.copy(REPO / "examples" / "u2_cnn" / f"{example}.ipynb", subs / f"example_{example}.ipynb")
    return grade(course, "u2_cnn", [subs], root / "out", workers=2, call_seconds=3)


def test_the_solution_earns_every_point(results):
    """Does the solution notebook score max_score (50), with every check passing?"""
    assert results["solution"]["score"] == results["solution"]["max_score"] == 50
    assert failing_checks(results["solution"]) == set()


def test_the_release_earns_nothing(results):
    """Does the untouched release score 0, each check saying the function is not implemented?"""
    assert results["release"]["score"] == 0
    assert all("NotImplementedError" in t["output"] for t in checks_of(results["release"]))


@pytest.mark.parametrize("name", SHORTCUTS)
def test_each_shortcut_loses_its_whole_part(results, name):
    """Does a right answer through a forbidden built-in, autograd, or with the recording switched off cost exactly
    its parts, every check of them, with the rule saying why, while every case still computed the right values?"""
    expect_shortcut_voids(results[f"shortcut_{name}"], SHORTCUTS[name])


@pytest.mark.parametrize("name", ALTERNATIVES)
def test_correct_styles_near_a_rule_keep_full_marks(results, name):
    """Do an own helper called `conv2d` and a module-level alias in a `%%time` cell stay within the rules?"""
    assert results[f"alternative_{name}"]["score"] == 50, failing_checks(results[f"alternative_{name}"])


@pytest.mark.parametrize("name", BUGS)
def test_each_planted_bug_loses_exactly_the_checks_that_catch_it(results, name):
    """Do the checks that should catch the bug fail, and every unrelated check still pass?"""
    bug = BUGS[name]
    failed = failing_checks(results[name])
    assert bug.must_fail <= failed, f"not caught by {sorted(bug.must_fail - failed)}"
    assert failed <= bug.must_fail | bug.may_fail, f"wrongly failed {sorted(failed - bug.must_fail - bug.may_fail)}"


def test_a_convolution_looping_over_output_pixels_fails_only_on_speed(results):
    """Is a correct convolution with a loop over output pixels penalised only on speed, by a wide margin?"""
    result = results["conv_loop_over_output_pixels"]
    timing = next(t for t in result["tests"] if t["extra_data"]["check"] == "test_conv2d_forward_is_vectorised")
    case = timing["extra_data"]["cases"][0]
    assert case["properties"]["ratio"] > 2 * case["properties"]["max_ratio"]
    assert "demasiado lenta" in timing["output"]


def test_the_shipped_checkpoint_is_small_and_loads_without_pickled_code():
    """Is the pretrained checkpoint under 3 MB, loadable with weights_only=True, and a torchvision ResNet's state?"""
    from autograder.checklib.models import SmallResNet

    path = REPO / "source" / "u2_cnn" / "small_resnet_glyphs.pt"
    assert path.stat().st_size < 3 * 2**20
    checkpoint = torch.load(path, weights_only=True)
    model = SmallResNet(len(checkpoint["classes"]))
    model.load_state_dict(checkpoint["state_dict"])
    assert checkpoint["held_out_accuracy"] > 0.9
    assert (REPO / "release" / "u2_cnn" / path.name).read_bytes() == path.read_bytes()


def test_the_bundled_examples_score_as_documented(results):
    """Do the examples that `make demo` grades get the scores README states?"""
    expected = json.loads((REPO / "examples" / "u2_cnn" / "expected.json").read_text())
    assert {name: results[f"example_{name}"]["score"] for name in expected} == expected


def test_the_solution_passes_its_public_checks_in_a_kernel_with_only_the_released_files(tmp_path):
    """Run as a student would (a Jupyter kernel in the downloaded folder), do all public checks pass, the
    fine-tuning ones finding the checkpoint next to the notebook through the vendored runtime?"""
    workdir = tmp_path / "student"
    shutil.copytree(REPO / "solutions" / "u2_cnn", workdir, ignore=shutil.ignore_patterns("__pycache__"))
    nb = nbformat.read(workdir / "u2_cnn.ipynb", as_version=4)
    # Last, so the checks run first: `import autograder` in a notebook counts as tampering with the rules.
    nb.cells.append(nbformat.v4.new_code_cell("import autograder\nprint(autograder.__file__)"))
    NotebookClient(nb, timeout=300, kernel_name="python3", allow_errors=True,
                   resources={"metadata": {"path": str(workdir)}}).execute()
    shown = ["".join(o.get("text", "") or o.get("data", {}).get("text/markdown", "") for o in cell.get("outputs", []))
             for cell in nb.cells]
    assert shown[-1].startswith(str(workdir / "autograder"))
    assert not [o for cell in nb.cells for o in cell.get("outputs", []) if o.output_type == "error"]
    checks = [text for cell, text in zip(nb.cells, shown) if cell.metadata.get("nbgrader", {}).get("grade")]
    assert len(checks) == 8
    for text in checks:
        assert "Comprobaciones públicas de" in text and "✘" not in text, text
    assert any("ResNet del curso, solo la cabeza" in text for text in shown)
