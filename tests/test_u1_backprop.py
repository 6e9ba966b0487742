"""Unit 1 as graded: the solution earns everything, the release nothing, and each planted bug
loses exactly the checks that should catch it (and those that depend on the buggy function)."""

import json
import shutil
from dataclasses import dataclass, field

import pytest

from conftest import REPO, Shortcut, checks_of, copy_course, expect_shortcut_voids, failing_checks, grade, with_cells, write

pytestmark = pytest.mark.slow

NET_CHECKS = {"test_two_layer_net_loss_and_gradients", "test_two_layer_net_regularisation",
              "test_two_layer_net_batch_of_one"}


@dataclass(frozen=True)
class Bug:
    code: str
    must_fail: set[str]
    may_fail: set[str] = field(default_factory=set)


BUGS = {
    "linear_db_wrong_axis": Bug(
        "def linear_backward(dout, cache):\n    x, W, b = cache\n    return dout @ W.T, x.T @ dout, dout.sum(dim=1)",
        {"test_linear_backward_matches_autograd", "test_linear_thin_shapes", *NET_CHECKS,
         "test_two_layer_net_learns_spiral"}),
    "softmax_without_max_shift": Bug(
        "def softmax(logits):\n    e = logits.exp()\n    return e / e.sum(dim=-1, keepdim=True)",
        {"test_softmax_is_stable_for_large_logits", "test_softmax_any_shape"}),
    "softmax_over_dim_1": Bug(
        "def softmax(logits):\n    z = logits - logits.max(dim=1, keepdim=True).values\n"
        "    return z.exp() / z.exp().sum(dim=1, keepdim=True)",
        {"test_softmax_any_shape"}),
    "cross_entropy_sums": Bug(
        "def softmax_cross_entropy(logits, y):\n    N = logits.shape[0]\n"
        "    logp = logits - torch.logsumexp(logits, dim=1, keepdim=True)\n"
        "    onehot = F.one_hot(y, logits.shape[1]).to(logits.dtype)\n"
        "    return -(onehot * logp).sum(), (logp.exp() - onehot) / N",
        {"test_cross_entropy_loss_matches_torch", "test_cross_entropy_edge_cases",
         "test_two_layer_net_loss_and_gradients", "test_two_layer_net_regularisation"}),
    "net_forgets_reg_gradient": Bug(
        "_loss = TwoLayerNet.loss\n"
        "def _no_reg_grad(self, X, y=None):\n"
        "    result = _loss(self, X, y)\n"
        "    if y is None:\n        return result\n"
        "    loss, grads = result\n"
        "    grads['W1'] = grads['W1'] - self.reg * self.params['W1']\n"
        "    grads['W2'] = grads['W2'] - self.reg * self.params['W2']\n"
        "    return loss, grads\n"
        "TwoLayerNet.loss = _no_reg_grad",
        {"test_two_layer_net_regularisation", "test_two_layer_net_batch_of_one"},
        {"test_two_layer_net_learns_spiral"}),
    "sgd_without_momentum": Bug(
        "_sgd = sgd_momentum\n"
        "def sgd_momentum(w, dw, config=None):\n"
        "    next_w, config = _sgd(w, dw, config)\n"
        "    return w - config['learning_rate'] * dw, config",
        {"test_sgd_momentum_follows_torch_sgd", "test_optimizers_default_config",
         "test_optimizers_minimise_a_quadratic"}),
    "adam_sign_flipped": Bug(
        "_adam = adam\n"
        "def adam(w, dw, config=None):\n"
        "    next_w, config = _adam(w, dw, config)\n"
        "    return 2 * w - next_w, config",
        {"test_adam_follows_torch_adam", "test_optimizers_default_config", "test_optimizers_minimise_a_quadratic",
         "test_two_layer_net_learns_spiral"}),
    "value_mul_overwrites_grad": Bug(
        "def _mul(self, other):\n"
        "    other = other if isinstance(other, Value) else Value(other)\n"
        "    out = Value(self.data * other.data, (self, other), '*')\n"
        "    def _backward():\n"
        "        self.grad = other.data * out.grad\n"
        "        other.grad = self.data * out.grad\n"
        "    out._backward = _backward\n"
        "    return out\n"
        "Value.__mul__ = _mul",
        {"test_value_forward_and_backward", "test_value_reflected_operations"},
        {"test_value_random_graphs"}),
    "value_relu_grad_passes_negatives": Bug(  # a survivor of `autograder audit` (`out.data >= 0` is always true)
        "def _relu(self):\n"
        "    out = Value(max(0.0, self.data), (self,), 'relu')\n"
        "    def _backward():\n"
        "        self.grad += (out.data >= 0) * out.grad\n"
        "    out._backward = _backward\n"
        "    return out\n"
        "Value.relu = _relu",
        {"test_value_forward_and_backward"},
        {"test_value_random_graphs"}),
    "pairwise_not_clamped": Bug(  # a survivor of `autograder audit`: tiny negative distances left in
        "def pairwise_sq_distances(X, Y):\n"
        "    return (X ** 2).sum(dim=1, keepdim=True) + (Y ** 2).sum(dim=1) - 2 * X @ Y.T",
        {"test_pairwise_distances_edge_shapes"}),
    "pairwise_double_loop": Bug(
        "def pairwise_sq_distances(X, Y):\n"
        "    D = torch.zeros(X.shape[0], Y.shape[0], dtype=X.dtype, device=X.device)\n"
        "    for i in range(X.shape[0]):\n"
        "        for j in range(Y.shape[0]):\n"
        "            D[i, j] = ((X[i] - Y[j]) ** 2).sum()\n"
        "    return D",
        {"test_pairwise_distances_are_fast"}),
    "pairwise_timing_cheats": Bug(  # looped, with a result cache and frozen clocks in the worker
        "import time\n"
        "time.perf_counter = time.monotonic = time.time = time.process_time = lambda: 0.0\n"
        "time.perf_counter_ns = time.monotonic_ns = time.time_ns = lambda: 0\n"
        "torch.cuda.synchronize = lambda *a, **k: None\n"
        "_cache = {}\n"
        "def pairwise_sq_distances(X, Y):\n"
        "    key = (X.shape, Y.shape, X.sum().item(), Y.sum().item())\n"
        "    if key not in _cache:\n"
        "        D = torch.zeros(X.shape[0], Y.shape[0], dtype=X.dtype, device=X.device)\n"
        "        for i in range(X.shape[0]):\n"
        "            for j in range(Y.shape[0]):\n"
        "                D[i, j] = ((X[i] - Y[j]) ** 2).sum()\n"
        "        _cache[key] = D\n"
        "    return _cache[key].clone()",
        {"test_pairwise_distances_are_fast"}),
    "pairwise_not_squared": Bug(
        "def pairwise_sq_distances(X, Y):\n    return ((X[:, None] - Y[None]) ** 2).sum(-1).sqrt()",
        {"test_pairwise_distances_match_cdist", "test_pairwise_distances_are_fast",
         "test_pairwise_distances_edge_shapes"}),
}


#: Shortcuts: right answers through what a by-hand rule forbids. Each must cost exactly the grade cells in `voids`
#: (a part whose own code calls the shortcut loses too: the rule covers the helpers it calls).
SHORTCUTS = {
    "linear_backward_by_autograd": Shortcut(
        "def linear_backward(dout, cache):\n"
        "    x, W, b = (t.detach().clone().requires_grad_() for t in cache)\n"
        "    (x @ W + b).backward(dout)\n"
        "    return x.grad, W.grad, b.grad",
        "autograd", {"linear", "two_layer_net"}),
    "relu_backward_by_autograd_grad": Shortcut(
        "def relu_backward(dout, cache):\n"
        "    x = cache.detach().requires_grad_()\n"
        "    return torch.autograd.grad(torch.relu(x), x, dout)[0]",
        "autograd", {"relu", "two_layer_net"}),
    "softmax_is_torch_softmax": Shortcut(
        "def softmax(logits):\n    return torch.softmax(logits, dim=-1)", "`F.softmax`", {"softmax"}),
    "softmax_is_the_tensor_method": Shortcut(  # `.softmax` is also the student's own name: only the recorder sees it
        "def softmax(logits):\n    return logits.softmax(dim=-1)", "`F.softmax`", {"softmax"}),
    "cross_entropy_gradient_by_backward": Shortcut(
        "def softmax_cross_entropy(logits, y):\n"
        "    z = logits.detach().clone().requires_grad_()\n"
        "    loss = (torch.logsumexp(z, dim=1) - z[torch.arange(z.shape[0], device=z.device), y]).mean()\n"
        "    loss.backward()\n"
        "    return loss.detach(), z.grad",
        "autograd", {"cross_entropy", "two_layer_net"}),
    "cross_entropy_is_f_cross_entropy": Shortcut(
        "def softmax_cross_entropy(logits, y):\n"
        "    onehot = F.one_hot(y, logits.shape[1]).to(logits.dtype)\n"
        "    return F.cross_entropy(logits, y), (softmax(logits) - onehot) / logits.shape[0]",
        "`F.cross_entropy`", {"cross_entropy"}),
    "two_layer_net_by_autograd": Shortcut(
        "class _AutogradNet(TwoLayerNet):\n"
        "    def loss(self, X, y=None):\n"
        "        p = {k: v.detach().clone().requires_grad_() for k, v in self.params.items()}\n"
        "        scores = torch.relu(X @ p['W1'] + p['b1']) @ p['W2'] + p['b2']\n"
        "        if y is None:\n"
        "            return scores.detach()\n"
        "        loss = F.cross_entropy(scores, y) + 0.5 * self.reg * ((p['W1'] ** 2).sum() + (p['W2'] ** 2).sum())\n"
        "        loss.backward()\n"
        "        return loss.detach(), {k: t.grad for k, t in p.items()}\n"
        "TwoLayerNet = _AutogradNet",
        "autograd", {"two_layer_net"}),
    "adam_is_torch_optim": Shortcut(
        "def adam(w, dw, config=None):\n"
        "    config = {} if config is None else config\n"
        "    for key, value in (('learning_rate', 1e-3), ('beta1', 0.9), ('beta2', 0.999), ('epsilon', 1e-8)):\n"
        "        config.setdefault(key, value)\n"
        "    config.setdefault('m', torch.zeros_like(w))\n"
        "    config.setdefault('v', torch.zeros_like(w))\n"
        "    config.setdefault('t', 0)\n"
        "    p = torch.nn.Parameter(w.detach().clone())\n"
        "    p.grad = dw.detach().clone()\n"
        "    opt = torch.optim.Adam([p], lr=config['learning_rate'], betas=(config['beta1'], config['beta2']),\n"
        "                           eps=config['epsilon'])\n"
        "    opt.state[p] = {'step': torch.tensor(float(config['t'])), 'exp_avg': config['m'].clone(),\n"
        "                    'exp_avg_sq': config['v'].clone()}\n"
        "    opt.step()\n"
        "    config['m'], config['v'], config['t'] = opt.state[p]['exp_avg'], opt.state[p]['exp_avg_sq'], config['t'] + 1\n"
        "    return p.detach(), config",
        "`torch.optim`", {"optim"}),
    "value_backward_through_torch_autograd": Shortcut(
        "_OPS = {'relu': torch.relu, 'tanh': torch.tanh, 'exp': torch.exp}\n"
        "def _torch_backward(self):\n"
        "    order, seen = [], set()\n"
        "    def visit(node):\n"
        "        if id(node) not in seen:\n"
        "            seen.add(id(node))\n"
        "            for parent in node._prev:\n"
        "                visit(parent)\n"
        "            order.append(node)\n"
        "    visit(self)\n"
        "    t = {}\n"
        "    for node in order:\n"
        "        a = [t[id(p)] for p in node._prev]\n"
        "        if not a:\n"
        "            t[id(node)] = torch.tensor(node.data, dtype=torch.float64, requires_grad=True)\n"
        "        elif node._op == '+':\n"
        "            t[id(node)] = a[0] + a[1]\n"
        "        elif node._op == '*':\n"
        "            t[id(node)] = a[0] * a[1]\n"
        "        elif node._op.startswith('**'):\n"
        "            t[id(node)] = a[0] ** float(node._op[2:])\n"
        "        else:\n"
        "            t[id(node)] = _OPS[node._op](a[0])\n"
        "    grads = torch.autograd.grad(t[id(self)], [t[id(n)] for n in order])\n"
        "    for node, g in zip(order, grads):\n"
        "        node.grad += g.item()\n"
        "Value.backward = _torch_backward",
        "autograd", {"autograd"}),
    "pairwise_is_cdist": Shortcut(
        "def pairwise_sq_distances(X, Y):\n    return torch.cdist(X, Y) ** 2", "`torch.cdist`", {"vectorized"}),
    "recording_switched_off_anywhere": Shortcut(
        "import inspect\nframe = inspect.currentframe()", "", {"linear", "relu", "softmax", "cross_entropy", "two_layer_net", "optim", "autograd",
                               "vectorized"}),
}

#: Correct solutions in styles that come close to a rule without breaking it: each keeps full marks.
ALTERNATIVES = {
    "linear_backward_through_a_layer_with_a_backward_method": (
        "class _Affine:\n"
        "    def backward(self, dout, cache):\n"
        "        x, W, b = cache\n"
        "        return dout @ W.T, x.T @ dout, dout.sum(dim=0)\n"
        "_affine = _Affine()\n"
        "def linear_backward(dout, cache):\n"
        "    return _affine.backward(dout, cache)"),
    "cross_entropy_with_torch_logsumexp": (
        "def softmax_cross_entropy(logits, y):\n"
        "    N = logits.shape[0]\n"
        "    log_probs = logits - torch.logsumexp(logits, dim=1, keepdim=True)\n"
        "    onehot = F.one_hot(y, logits.shape[1]).to(logits.dtype)\n"
        "    return -(log_probs * onehot).sum() / N, (log_probs.exp() - onehot) / N"),
    "softmax_defined_in_a_time_magic": (
        "%%time\n"
        "def softmax(logits):\n"
        "    e = (logits - logits.amax(dim=-1, keepdim=True)).exp()\n"
        "    return e / e.sum(dim=-1, keepdim=True)"),
}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    root = tmp_path_factory.mktemp("u1")
    course = copy_course(root / "course", source=REPO, assignments=("u1_backprop",))
    for folder in ("release", "solutions"):
        shutil.copytree(REPO / folder / "u1_backprop", course.root / folder / "u1_backprop")
    subs = root / "subs"
    subs.mkdir()
    solution = REPO / "solutions" / "u1_backprop" / "u1_backprop.ipynb"
    shutil.copy(solution, subs / "solution.ipynb")
    shutil.copy(REPO / "release" / "u1_backprop" / "u1_backprop.ipynb", subs / "release.ipynb")
    for name, bug in BUGS.items():
        write(with_cells(solution, bug.code), subs / f"{name}.ipynb")
    for name, shortcut in SHORTCUTS.items():
        write(with_cells(solution, shortcut.code), subs / f"shortcut_{name}.ipynb")
    for name, code in ALTERNATIVES.items():
        write(with_cells(solution, code), subs / f"alternative_{name}.ipynb")
    for example in ("correct", "partial", "broken", "empty"):
        shutil.copy(REPO / "examples" / "u1_backprop" / f"{example}.ipynb", subs / f"example_{example}.ipynb")
    return grade(course, "u1_backprop", [subs], root / "out", workers=2, call_seconds=3)


def test_the_solution_earns_every_point(results):
    """Does the solution notebook score max_score (40), with every check passing?"""
    assert results["solution"]["score"] == results["solution"]["max_score"] == 40
    assert failing_checks(results["solution"]) == set()


def test_the_release_earns_nothing(results):
    """Does the untouched release score 0, each check saying the function is not implemented?"""
    assert results["release"]["score"] == 0
    assert all("NotImplementedError" in t["output"] for t in checks_of(results["release"]))


@pytest.mark.parametrize("name", SHORTCUTS)
def test_each_shortcut_loses_its_whole_part(results, name):
    """Does a right answer through a forbidden built-in (or with the recording switched off) cost exactly its
    parts, every check of them, with the rule saying why, while every case still computed the right values?"""
    expect_shortcut_voids(results[f"shortcut_{name}"], SHORTCUTS[name])


def test_the_recorder_alone_catches_what_the_source_hides(results):
    """`logits.softmax` in a function itself called `softmax` is no evidence in the source; does the record of
    what ran still void the part?"""
    rules = results["shortcut_softmax_is_the_tensor_method"]["extra_data"]["rules"]
    rule = next(r for r in rules if r["grade_id"] == "softmax")
    assert rule["status"] == "violated"
    assert {(e["kind"], e["how"]) for e in rule["evidence"]} == {("forbidden", "al llamar a tu código")}


@pytest.mark.parametrize("name", ALTERNATIVES)
def test_correct_styles_near_a_rule_keep_full_marks(results, name):
    """Do a helper object with a `backward` method, `torch.logsumexp` and a `%%time` cell stay within the rules?"""
    assert results[f"alternative_{name}"]["score"] == 40, failing_checks(results[f"alternative_{name}"])


@pytest.mark.parametrize("name", BUGS)
def test_each_planted_bug_loses_exactly_the_checks_that_catch_it(results, name):
    """Do the checks that should catch the bug fail, and every unrelated check still pass?"""
    bug = BUGS[name]
    failed = failing_checks(results[name])
    assert bug.must_fail <= failed, f"not caught by {sorted(bug.must_fail - failed)}"
    assert failed <= bug.must_fail | bug.may_fail, f"wrongly failed {sorted(failed - bug.must_fail - bug.may_fail)}"


def test_a_loop_based_distance_fails_only_the_timing_check(results):
    """Is a correct but double-looped `pairwise_sq_distances` penalised only on speed, by a wide margin?"""
    result = results["pairwise_double_loop"]
    assert failing_checks(result) == {"test_pairwise_distances_are_fast"}
    timing = next(t for t in result["tests"] if t["extra_data"]["check"] == "test_pairwise_distances_are_fast")
    ratio = timing["extra_data"]["cases"][0]["properties"]["ratio"]
    assert ratio > 4 * timing["extra_data"]["cases"][0]["properties"]["max_ratio"]
    assert "demasiado lenta" in timing["output"]


def test_the_bundled_examples_score_as_documented(results):
    """Do the examples that `make demo` grades get the scores README states?"""
    expected = json.loads((REPO / "examples" / "u1_backprop" / "expected.json").read_text())
    assert {name: results[f"example_{name}"]["score"] for name in expected} == expected
