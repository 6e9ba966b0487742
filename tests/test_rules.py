"""By-hand rules: the recorder sees every spelling of a forbidden built-in, the source check reads
aliases, helpers and tampering, and a broken rule voids its grade cell through the real pipeline."""

import ast

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from autograder import sourcecheck
from autograder.checklib.forbidden import (
    AUTOGRAD, BATCH_NORM, CDIST, CLIP_GRAD, CONV, CROSS_ENTROPY, LSTM_LAYERS, MAX_POOL, MULTIHEAD, OPTIM,
    RANKING_LOSSES, RNN_LAYERS, SDPA, SOFTMAX, TRANSFORMER_LAYERS,
)
from autograder.recorder import OpRecorder
from autograder.remote import Client, LocalTransport, StudentNamespace
from autograder.rules import NOT_RUN, PASSED, UNREADABLE, VIOLATED, ByHand, RuleWatch
from autograder.sourcecheck import scan

from conftest import copy_course, grade, with_cells, write

CATALOGUE = (AUTOGRAD, BATCH_NORM, CDIST, CLIP_GRAD, CONV, CROSS_ENTROPY, LSTM_LAYERS, MAX_POOL, MULTIHEAD, OPTIM,
             RANKING_LOSSES, RNN_LAYERS, SDPA, SOFTMAX, TRANSFORMER_LAYERS)


def x4(*shape):
    return torch.randn(*shape, dtype=torch.float64)


def optimizer_step(cls, **kwargs):
    p = nn.Parameter(x4(3))
    p.grad = x4(3)
    cls([p], lr=0.1, **kwargs).step()


def backward_on_a_copy():
    x = x4(3).requires_grad_()
    (x * x).sum().backward()


def grad_holder():
    p = nn.Parameter(x4(3))
    p.grad = x4(3)
    return p


def multihead_fast_path():
    layer = nn.MultiheadAttention(4, 2, batch_first=True).double().eval()
    with torch.no_grad():
        layer(x4(2, 3, 4), x4(2, 3, 4), x4(2, 3, 4))


def transformer_fast_path():
    layer = nn.TransformerEncoderLayer(4, 2, 8, dropout=0.0, batch_first=True).double().eval()
    with torch.no_grad():
        layer(x4(2, 3, 4))


def forward_mode_dual():
    import torch.autograd.forward_ad as forward_ad

    with forward_ad.dual_level():
        forward_ad.unpack_dual(forward_ad.make_dual(x4(3), x4(3)) ** 2)


SPELLINGS = {
    "F.conv2d": (CONV, lambda: F.conv2d(x4(1, 2, 5, 5), x4(3, 2, 3, 3))),
    "torch.conv2d": (CONV, lambda: torch.conv2d(x4(1, 2, 5, 5), x4(3, 2, 3, 3))),
    "nn.Conv2d": (CONV, lambda: nn.Conv2d(2, 3, 3).double()(x4(1, 2, 5, 5))),
    "F.conv_transpose2d": (CONV, lambda: F.conv_transpose2d(x4(1, 3, 3, 3), x4(3, 2, 3, 3))),
    "F.conv1d": (CONV, lambda: F.conv1d(x4(1, 2, 5), x4(3, 2, 3))),
    "torch.nn.grad.conv2d_input": (CONV, lambda: torch.nn.grad.conv2d_input((1, 2, 5, 5), x4(3, 2, 3, 3),
                                                                             x4(1, 3, 3, 3))),
    "torch.nn.grad.conv2d_weight": (CONV, lambda: torch.nn.grad.conv2d_weight(x4(1, 2, 5, 5), (3, 2, 3, 3),
                                                                               x4(1, 3, 3, 3))),
    "F.max_pool2d": (MAX_POOL, lambda: F.max_pool2d(x4(1, 2, 4, 4), 2)),
    "F.max_pool2d(return_indices)": (MAX_POOL, lambda: F.max_pool2d(x4(1, 2, 4, 4), 2, return_indices=True)),
    "nn.MaxPool2d": (MAX_POOL, lambda: nn.MaxPool2d(2)(x4(1, 2, 4, 4))),
    "F.adaptive_max_pool2d": (MAX_POOL, lambda: F.adaptive_max_pool2d(x4(1, 2, 4, 4), 2)),
    "F.max_unpool2d": (MAX_POOL, lambda: F.max_unpool2d(x4(1, 2, 2, 2), torch.zeros(1, 2, 2, 2, dtype=torch.long), 2)),
    "F.batch_norm": (BATCH_NORM, lambda: F.batch_norm(x4(4, 2, 3, 3), None, None, training=True)),
    "nn.BatchNorm2d (train)": (BATCH_NORM, lambda: nn.BatchNorm2d(2).double()(x4(4, 2, 3, 3))),
    "nn.BatchNorm2d (eval)": (BATCH_NORM, lambda: nn.BatchNorm2d(2).double().eval()(x4(4, 2, 3, 3))),
    "F.layer_norm": (BATCH_NORM, lambda: F.layer_norm(x4(2, 18), (18,))),
    "F.group_norm": (BATCH_NORM, lambda: F.group_norm(x4(1, 2, 9), 2)),
    "F.instance_norm": (BATCH_NORM, lambda: F.instance_norm(x4(1, 2, 3, 3))),
    "torch.softmax": (SOFTMAX, lambda: torch.softmax(x4(2, 3), dim=-1)),
    "F.softmax": (SOFTMAX, lambda: F.softmax(x4(2, 3), dim=-1)),
    "Tensor.softmax": (SOFTMAX, lambda: x4(2, 3).softmax(-1)),
    "F.log_softmax": (SOFTMAX, lambda: F.log_softmax(x4(2, 3), dim=-1)),
    "nn.Softmax": (SOFTMAX, lambda: nn.Softmax(dim=-1)(x4(2, 3))),
    "torch.special.softmax": (SOFTMAX, lambda: torch.special.softmax(x4(2, 3), -1)),
    "F.cross_entropy": (CROSS_ENTROPY, lambda: F.cross_entropy(x4(4, 3), torch.tensor([0, 1, 2, 0]))),
    "F.nll_loss": (CROSS_ENTROPY, lambda: F.nll_loss(x4(4, 3), torch.tensor([0, 1, 2, 0]))),
    "nn.CrossEntropyLoss": (CROSS_ENTROPY, lambda: nn.CrossEntropyLoss()(x4(4, 3), torch.tensor([0, 1, 2, 0]))),
    "torch.optim.SGD": (OPTIM, lambda: optimizer_step(torch.optim.SGD, momentum=0.9)),
    "torch.optim.Adam": (OPTIM, lambda: optimizer_step(torch.optim.Adam)),
    "torch.optim.AdamW": (OPTIM, lambda: optimizer_step(torch.optim.AdamW)),
    "torch.cdist": (CDIST, lambda: torch.cdist(x4(4, 3), x4(5, 3))),
    "torch.pdist": (CDIST, lambda: torch.pdist(x4(4, 3))),
    ".backward()": (AUTOGRAD, backward_on_a_copy),
    "torch.autograd.grad": (AUTOGRAD, lambda: torch.autograd.grad(((x := x4(3).requires_grad_()) ** 2).sum(), x)),
    "torch.func.grad": (AUTOGRAD, lambda: torch.func.grad(lambda x: (x ** 2).sum())(x4(3))),
    "torch.func.vjp": (AUTOGRAD, lambda: torch.func.vjp(lambda x: x ** 2, x4(3))[1](x4(3))),
    "torch.autograd.functional.jacobian": (AUTOGRAD, lambda: torch.autograd.functional.jacobian(
        lambda x: x ** 2, x4(3))),
    "torch.func.jvp (forward mode)": (AUTOGRAD, lambda: torch.func.jvp(lambda x: x ** 2, (x4(3),), (x4(3),))),
    "torch.func.jacfwd": (AUTOGRAD, lambda: torch.func.jacfwd(lambda x: x ** 2)(x4(3))),
    "torch.autograd.forward_ad": (AUTOGRAD, forward_mode_dual),
    "torch.sparse.softmax": (SOFTMAX, lambda: torch.sparse.softmax(x4(3, 3).to_sparse(), 1)),
    "nn.RNN": (RNN_LAYERS, lambda: nn.RNN(3, 4).double()(x4(5, 2, 3))),
    "nn.RNNCell": (RNN_LAYERS, lambda: nn.RNNCell(3, 4).double()(x4(2, 3))),
    "torch.rnn_tanh_cell": (RNN_LAYERS, lambda: torch.rnn_tanh_cell(x4(2, 3), x4(2, 4), x4(4, 3), x4(4, 4))),
    "nn.LSTMCell": (LSTM_LAYERS, lambda: nn.LSTMCell(3, 4).double()(x4(2, 3))),
    "nn.LSTM": (LSTM_LAYERS, lambda: nn.LSTM(3, 4).double()(x4(5, 2, 3))),
    "torch.lstm_cell": (LSTM_LAYERS, lambda: torch.lstm_cell(x4(2, 3), (x4(2, 4), x4(2, 4)), x4(16, 3), x4(16, 4))),
    "clip_grad_norm_": (CLIP_GRAD, lambda: torch.nn.utils.clip_grad_norm_([grad_holder()], 1.0)),
    "clip_grad_value_": (CLIP_GRAD, lambda: torch.nn.utils.clip_grad_value_([grad_holder()], 0.1)),
    "F.scaled_dot_product_attention": (SDPA, lambda: F.scaled_dot_product_attention(x4(2, 3, 4), x4(2, 5, 4),
                                                                                    x4(2, 5, 6))),
    "nn.MultiheadAttention (train)": (MULTIHEAD, lambda: nn.MultiheadAttention(4, 2, batch_first=True).double()(
        x4(2, 3, 4), x4(2, 3, 4), x4(2, 3, 4))),
    "nn.MultiheadAttention (eval, no grad)": (MULTIHEAD, multihead_fast_path),
    "F.multi_head_attention_forward": (MULTIHEAD, lambda: F.multi_head_attention_forward(
        x4(3, 2, 4), x4(3, 2, 4), x4(3, 2, 4), 4, 2, x4(12, 4), None, None, None, False, 0.0, x4(4, 4), None,
        need_weights=False)),
    "nn.TransformerEncoderLayer (train)": (TRANSFORMER_LAYERS, lambda: nn.TransformerEncoderLayer(
        4, 2, 8, dropout=0.0, batch_first=True).double()(x4(2, 3, 4))),
    "nn.TransformerEncoderLayer (eval, no grad)": (TRANSFORMER_LAYERS, transformer_fast_path),
    "F.logsigmoid": (RANKING_LOSSES, lambda: F.logsigmoid(x4(5))),
    "nn.LogSigmoid": (RANKING_LOSSES, lambda: nn.LogSigmoid()(x4(5))),
    "F.softplus": (RANKING_LOSSES, lambda: F.softplus(-x4(5))),
    "nn.Softplus": (RANKING_LOSSES, lambda: nn.Softplus()(x4(5))),
    "F.binary_cross_entropy_with_logits": (RANKING_LOSSES, lambda: F.binary_cross_entropy_with_logits(
        x4(5), torch.ones(5, dtype=torch.float64))),
    "nn.BCELoss": (RANKING_LOSSES, lambda: nn.BCELoss()(torch.sigmoid(x4(5)), torch.ones(5, dtype=torch.float64))),
    "F.soft_margin_loss": (RANKING_LOSSES, lambda: F.soft_margin_loss(x4(5), torch.ones(5, dtype=torch.float64))),
    "F.margin_ranking_loss": (RANKING_LOSSES, lambda: F.margin_ranking_loss(
        x4(5), x4(5), torch.ones(5, dtype=torch.float64), margin=1.0)),
    "nn.MarginRankingLoss": (RANKING_LOSSES, lambda: nn.MarginRankingLoss(margin=0.5)(
        x4(5), x4(5), torch.ones(5, dtype=torch.float64))),
    "torch.margin_ranking_loss": (RANKING_LOSSES, lambda: torch.margin_ranking_loss(
        x4(5), x4(5), torch.ones(5, dtype=torch.float64), 1.0, 1)),
    "F.multi_margin_loss": (RANKING_LOSSES, lambda: F.multi_margin_loss(
        x4(3, 2), torch.zeros(3, dtype=torch.long))),
    "F.hinge_embedding_loss": (RANKING_LOSSES, lambda: F.hinge_embedding_loss(x4(5), -torch.ones(5, dtype=torch.float64))),
}


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_every_spelling_of_a_forbidden_builtin_is_seen_at_the_dispatcher(spelling):
    """Called any public way, does the built-in hit its catalogue entry in the recorder (its operations at the
    dispatcher, or its functions for those that reach it only as ordinary operations)?"""
    forbidden, call = SPELLINGS[spelling]
    recorder = OpRecorder(forbidden.ops, autograd=forbidden.autograd, functions=forbidden.functions)
    recorder.run(call)
    assert recorder.intact
    assert recorder.hits or recorder.autograd_seen, f"{spelling} went unseen"


ALLOWED = {
    "F.unfold / F.fold": lambda: F.fold(F.unfold(x4(1, 2, 5, 5), 3, padding=1), (5, 5), 3, padding=1),
    "F.pad": lambda: F.pad(x4(1, 2, 3, 3), (1, 1, 1, 1)),
    "Tensor.unfold": lambda: x4(1, 2, 6, 6).unfold(2, 2, 2).unfold(3, 2, 2).amax(dim=(-2, -1)),
    "einsum and @": lambda: torch.einsum("nkl,fk->nfl", x4(2, 4, 5), x4(3, 4)) @ x4(5, 2),
    "argmax, one_hot, scatter_add_": lambda: torch.zeros(2, 9, dtype=torch.float64).scatter_add_(
        1, F.one_hot(x4(2, 4).argmax(1), 9).argmax(1, keepdim=True), x4(2, 1)),
    "mean, var, sqrt": lambda: (x4(4, 2, 3, 3).var(dim=(0, 2, 3), unbiased=False) + 1e-5).sqrt()
    + x4(4, 2, 3, 3).mean(dim=(0, 2, 3)),
    "logsumexp, exp, clamp_min": lambda: (x4(3, 4).logsumexp(1).exp() - 1).clamp_min(0),
    "F.softplus, F.relu, sigmoid": lambda: F.softplus(x4(3)) + F.relu(x4(3)) + torch.sigmoid(x4(3)),
    "torch.softmax (allowed in attention)": lambda: torch.softmax(x4(2, 3), dim=-1),
    "nn.Linear, nn.LayerNorm, nn.ReLU, nn.Dropout": lambda: nn.Dropout(0.1)(nn.ReLU()(nn.LayerNorm(4).double()(
        nn.Linear(3, 4).double()(x4(2, 3))))),
    "nn.Embedding": lambda: nn.Embedding(5, 3)(torch.tensor([0, 4])),
    "torch.linalg.vector_norm, torch.norm": lambda: torch.linalg.vector_norm(x4(3)) + torch.norm(x4(3)),
    "bmm, masked_fill, tanh, sigmoid": lambda: torch.bmm(x4(2, 3, 4), x4(2, 4, 5)).masked_fill(
        torch.ones(2, 3, 5, dtype=torch.bool), -1e6).tanh().sigmoid(),
    "log1p, exp, clamp, logaddexp": lambda: torch.log1p(torch.exp(-x4(4).abs())) + x4(4).clamp(min=0)
    + torch.logaddexp(torch.zeros(4, dtype=torch.float64), x4(4)),
    "linalg.solve, cholesky, cholesky_solve": lambda: torch.cholesky_solve(
        x4(3, 1), torch.linalg.cholesky(torch.eye(3, dtype=torch.float64) * 2)) + torch.linalg.solve(
        torch.eye(3, dtype=torch.float64) * 2, x4(3, 1)),
}
#: What a building block may hit: Unit 1's softmax and Unit 2's normalisations are allowed in Unit 3, softplus
#: everywhere but Unit 4's ranking losses.
ALLOWED_EXCEPT = {"torch.softmax (allowed in attention)": (SOFTMAX,),
                  "nn.Linear, nn.LayerNorm, nn.ReLU, nn.Dropout": (BATCH_NORM,),
                  "F.softplus, F.relu, sigmoid": (RANKING_LOSSES,)}


@pytest.mark.parametrize("block", ALLOWED)
def test_allowed_building_blocks_hit_no_catalogue_entry(block):
    """Do the building blocks the notebooks allow (unfold, fold, einsum, softmax in Unit 3's attention,
    `nn.Linear`, `nn.LayerNorm`, vector norms, ...) stay clear of every rule except their own?"""
    forbidden = tuple(f for f in CATALOGUE if f not in ALLOWED_EXCEPT.get(block, ()))
    recorder = OpRecorder(frozenset().union(*(f.ops for f in forbidden)), autograd=True,
                          functions=frozenset().union(*(f.functions for f in forbidden)))
    recorder.run(ALLOWED[block])
    assert recorder.intact and not recorder.hits and not recorder.autograd_seen


def test_a_call_that_pops_the_recorder_is_reported_as_tampering():
    """If the student's code takes the recorder off the mode stack, does the report say the recording broke?"""
    from torch.utils._python_dispatch import _get_current_dispatch_mode_stack, _pop_mode

    recorder = OpRecorder(CONV.ops, autograd=False)
    recorder.run(lambda: (_pop_mode(), F.conv2d(x4(1, 1, 3, 3), x4(1, 1, 2, 2))))
    assert not recorder.hits and not recorder.intact
    assert _get_current_dispatch_mode_stack() == []


def test_a_call_that_swaps_the_autograd_entry_point_is_reported_as_tampering():
    """Replacing the engine's entry point to hide a backward pass breaks the recording, visibly."""
    recorder = OpRecorder(frozenset(), autograd=True)

    def hide():
        torch.autograd._engine_run_backward = lambda *args, **kwargs: None

    recorder.run(hide)
    assert not recorder.intact


def findings(source, rule):
    return [(e.forbidden, e.what) for e in scan([("celda 1", source)], (rule,)).by_rule[rule]]


def tamper(source):
    return [e.what for e in scan([("celda 1", source)], ()).tamper]


CONV_RULE = ByHand("conv2d", names=("conv2d_forward",), forbid=(CONV, AUTOGRAD))


def test_a_cell_met_in_an_earlier_submission_is_read_the_same_way():
    """Is a cell's parse kept for the next submission with the same cell (the notebook's own cells are in every
    submission), left unchanged by the scans that read it, and do those scans find what a first reading finds,
    with each submission's other cells? A cell longer than `KEPT_CELL_CHARS` is parsed afresh each time."""
    alias = "import torch.nn.functional as F\nc = F.conv2d"
    uses = "def conv2d_forward(x, w):\n    return c(x, w)"
    clean = "def conv2d_forward(x, w):\n    return x"
    kept = sourcecheck._kept_cell("celda 1", alias)
    before = [ast.dump(unit.tree) for unit in kept]
    first = scan([("celda 1", alias), ("celda 2", uses)], (CONV_RULE,)).by_rule[CONV_RULE]
    again = scan([("celda 1", alias), ("celda 2", uses)], (CONV_RULE,)).by_rule[CONV_RULE]
    other = scan([("celda 1", alias), ("celda 2", clean)], (CONV_RULE,)).by_rule[CONV_RULE]
    assert first and first == again
    assert other == []
    assert sourcecheck._kept_cell("celda 1", alias) is kept and [ast.dump(unit.tree) for unit in kept] == before
    long = alias + "\n" + "#" * sourcecheck.KEPT_CELL_CHARS
    assert sourcecheck._parse([("celda 1", long)])[0] is not sourcecheck._parse([("celda 1", long)])[0]


@pytest.mark.parametrize("source", [
    "import torch.nn.functional as F\ndef conv2d_forward(x, w):\n    return F.conv2d(x, w)",
    "from torch.nn.functional import conv2d as c\ndef conv2d_forward(x, w):\n    return c(x, w)",
    "import torch.nn.functional as F\ndef helper(x, w):\n    return F.conv2d(x, w)\n"
    "def conv2d_forward(x, w):\n    return helper(x, w)",
    "import torch.nn.functional as F\nc = F.conv2d\ndef conv2d_forward(x, w):\n    return c(x, w)",
    "import torch.nn.functional as F\ndef conv2d_forward(x, w):\n    return getattr(F, 'conv2d')(x, w)",
    "def conv2d_forward(x, w):\n    import torch.nn as G\n    return G.Conv2d(1, 1, 3)(x)",
    "from torch.nn.functional import *\ndef conv2d_forward(x, w):\n    return conv2d(x, w)",
    "def conv2d_forward(x, w):\n    x = x.clone().requires_grad_()\n    return x",
    "get_ipython().run_cell_magic('time', '', 'import torch\\ndef conv2d_forward(x, w):\\n"
    "    return torch.conv2d(x, w)\\n')",
    # every branch of one statement counts: the scan cannot know which one runs
    "import torch\nif True:\n    def conv2d_forward(x, w):\n        return torch.conv2d(x, w)\n"
    "else:\n    def conv2d_forward(x, w):\n        return x",
    # later patches of the covered name: an attribute, setattr, a global assigned in a function
    "import torch\ndef conv2d_forward(x, w):\n    return x\nconv2d_forward.__call__ = torch.conv2d",
    "import torch\nclass C:\n    pass\nconv2d_forward = C()\nsetattr(conv2d_forward, 'f', torch.conv2d)",
    "import torch\ndef conv2d_forward(x, w):\n    return x\ndef install():\n    global conv2d_forward\n"
    "    conv2d_forward = torch.conv2d\ninstall()",
    # a function of the student's called conv2d does not hide torch's, reached through the module
    "import torch\ndef conv2d(x, w):\n    return torch.conv2d(x, w)\ndef conv2d_forward(x, w):\n    return conv2d(x, w)",
    "import torch\ndef conv2d(x, w):\n    return getattr(torch, 'conv2d')(x, w)\n"
    "def conv2d_forward(x, w):\n    return conv2d(x, w)",
])
def test_the_source_check_finds_forbidden_names_through_aliases_and_helpers(source):
    """Do aliases, helpers, module-level assignments, strings, local imports, star imports and `%%time`
    bodies all reveal a forbidden built-in in the covered function's reach?"""
    assert findings(source, CONV_RULE)


@pytest.mark.parametrize("source", [
    # the student's own function called conv2d is theirs, not torch's
    "import torch.nn.functional as F\ndef conv2d(x, w):\n    return F.unfold(x, w.shape[-1])\n"
    "def conv2d_forward(x, w):\n    return conv2d(x, w)",
    # a first attempt replaced by a later definition never runs
    "import torch.nn.functional as F\ndef conv2d_forward(x, w):\n    return F.conv2d(x, w)\n"
    "def conv2d_forward(x, w):\n    return F.unfold(x, 3)",
    # forbidden names elsewhere in the notebook, out of the covered function's reach
    "import torch.nn.functional as F\ndemo = F.conv2d\ndef conv2d_forward(x, w):\n    return F.unfold(x, 3)",
    # a parameter named like a global that uses autograd is a local name
    "import torch\nb = torch.zeros(1, requires_grad=True)\ndef conv2d_forward(x, w, b):\n    return x + b",
    # a method the student defines called backward is not autograd
    "class Layer:\n    def backward(self, d):\n        return d\ndef conv2d_forward(x, w):\n"
    "    return Layer().backward(x)",
    # a docstring that names the rule
    "def conv2d_forward(x, w):\n    'conv2d'\n    return x",
    # an exception's name is local, whatever a global of that name did
    "import torch\nfor err in range(3):\n    torch.ones(1, requires_grad=True).sum().backward()\n"
    "def conv2d_forward(x, w):\n    try:\n        return x\n    except ValueError as err:\n        raise err",
    # patching an unrelated attribute of a covered class keeps its body in view, and clean
    "class Layer:\n    pass\ndef conv2d_forward(x, w):\n    return x\nconv2d_forward.version = 2",
])
def test_the_source_check_leaves_honest_code_alone(source):
    """Do the student's own names, replaced definitions, unreachable demos, local names, own methods
    and docstrings stay clear of the rule?"""
    assert findings(source, CONV_RULE) == []


@pytest.mark.parametrize("source", [
    "import gc\ngc.get_objects()", "import torch\ntorch._C._set_grad_enabled(True)", "import sys\nsys.modules['x']",
    "def f():\n    pass\nf.__globals__", "exec('x = 1')", "import threading",
    "from torch.utils._python_dispatch import TorchDispatchMode", "import torch\nname = 'x'\ngetattr(torch, name)",
    "import autograder.dispatch", "from autograder import recorder", "import inspect\ninspect.currentframe()",
    "from os import fork", "import torch.overrides", "eval('1')", "__import__('gc')", "import pickle\npickle.loads(b'')",
    "import torch\ntorch.load('f.pt', weights_only=False)", "globals()['f'] = print",
    # modules reached through another module, or through the grader's allowed ones
    "import torch\ntorch.sys.modules['autograder.recorder']", "from torch import sys", "import numpy as np\nnp.os.fork()",
    "from autograder.selfcheck import sys as s", "import autograder.checklib\nautograder.checklib.timing.torch.sys",
    "import torch\ngetattr(torch, 'sys')", "import autograder.checklib\nautograder.recorder",
])
def test_the_source_check_flags_attempts_to_get_around_the_recording(source):
    """Does each way to reach the recorder, torch's internals or unread code count as tampering?"""
    assert tamper(source)


@pytest.mark.parametrize("source", [
    "from autograder.checklib import glyphs", "from autograder.selfcheck import make_check",
    "import sys\nprint(sys.version)", "import torch\ntorch.manual_seed(0)", "x = (1).__class__",
    "import torch\ntorch.load('f.pt', weights_only=True)", "import re\nre.compile('a')",
    "from torch.nn.modules.utils import _pair\n_pair(3)", "import torch\nprint(torch.__version__)",
    "import torch\ntorch.nn.modules.utils._pair(3)", "from torch import nn\nnn.init._calculate_fan_in_and_fan_out",
    "from torch import nn\nclass Net(nn.Module):\n    def __init__(self):\n        nn.Module.__init__(self)",
    "import gc\ngc.collect()", "import inspect\ninspect.signature(print)", "import pickle\npickle.dumps(1)",
    "import os\nos.path.join('a', 'b')", "import torch\nmodel = torch.compile(torch.nn.Linear(2, 2))",
])
def test_the_source_check_accepts_ordinary_notebook_code(source):
    """Does everyday code (the setup cell, printing sys.version, seeding) pass the tampering scan?"""
    assert tamper(source) == []


def test_code_too_deep_to_read_counts_as_tampering_instead_of_crashing_the_grader():
    """A 1000-term expression (or one deeper than the parser goes) cannot hide a call from the scan."""
    for terms in (1_000, 100_000):
        source = "def conv2d_forward(a):\n    return " + " + ".join(["a"] * terms)
        found = scan([("celda 1", source)], (CONV_RULE,))
        assert [e.kind for e in found.tamper] == [UNREADABLE]
        assert "demasiado anidado" in found.tamper[0].render()


def test_a_rule_is_not_run_until_a_watched_call_returns():
    """Before the function works, is the rule shown as not yet checked rather than passed?"""
    rule = ByHand("double", names=("double",), forbid=(CONV,))
    code = "def double(x):\n    raise NotImplementedError()"
    namespace = {}
    exec(code, namespace)
    watch = RuleWatch(cells=[("celda 1", code)])
    watch.use((rule,))
    student = StudentNamespace(Client(LocalTransport(namespace), watch=watch))
    with pytest.raises(Exception):
        student.double(x4(2))
    assert [v.status for v in watch.verdicts()] == [NOT_RUN]
    exec("def double(x):\n    return 2 * x", namespace)
    student.double(x4(2))
    assert [v.status for v in watch.verdicts()] == [PASSED]


def test_a_missing_or_malformed_report_counts_as_tampering():
    """A worker that answers a watched call without a valid report loses the rule."""
    rule = ByHand("double", names=("double",), forbid=(CONV,))
    watch = RuleWatch(cells=None)
    watch.use((rule,))
    watch.observe(frozenset({"double"}), {"hits": [], "autograd": False, "intact": "yes"}, completed=True)
    verdict = watch.verdicts()[0]
    assert verdict.status == VIOLATED and "se alteró" in verdict.message()


@pytest.mark.slow
def test_a_broken_rule_voids_its_grade_cell_and_nothing_else(demo_course, tmp_path):
    """Graded through the pipeline, does a correct `double` that adds lose its cell (and only it), with the
    rule's entry naming `torch.add`, while tampering anywhere loses every rule?"""
    solution = demo_course.solutions_dir("demo") / "demo.ipynb"
    subs = tmp_path / "subs"
    subs.mkdir()
    write(with_cells(solution, "def double(x):\n    return x + x"), subs / "adds.ipynb")
    write(with_cells(solution, "import threading"), subs / "tampers.ipynb")
    write(with_cells(solution, "def double(x):\n    return x.mul(2)"), subs / "honest.ipynb")
    results = grade(demo_course, "demo", [subs], tmp_path / "out", workers=1)
    adds = results["adds"]
    assert adds["extra_data"]["grade_cells"] == {"double": {"score": 0.0, "max_score": 2.0},
                                                 "counter": {"score": 2.0, "max_score": 2.0}}
    entry = next(t for t in adds["tests"] if t["extra_data"]["check"] == "by_hand:double")
    assert entry["status"] == "failed" and "`torch.add`" in entry["output"] and "se ejecutó `add`" in entry["output"]
    voided = [t for t in adds["tests"] if t["extra_data"].get("grade_id") == "double" and "cases" in t["extra_data"]
              and t["extra_data"]["cases"]]
    ran = [c["outcome"] for t in voided for c in t["extra_data"]["cases"] if c["outcome"] != "skipped"]
    assert ran and set(ran) == {"passed"}  # right answers: the rule alone took the points
    assert all(t["score"] == 0 and t["output"].startswith("Sin puntos") for t in voided)
    assert "«double»" in adds["output"]
    rules = results["tampers"]["extra_data"]["rules"]
    assert results["tampers"]["score"] == 2 and rules[0]["status"] == "violated"
    assert rules[0]["evidence"][0]["what"] == "threading" and "celda 9, línea 1" in rules[0]["evidence"][0]["how"]
    assert results["honest"]["score"] == 4


def test_the_build_requires_the_introduction_to_state_each_rule(tmp_path):
    """Does the build stop, naming what is missing, when the notebook's introduction omits a rule?"""
    import nbformat

    from conftest import run_cli

    course = copy_course(tmp_path / "course")
    notebook = course.source_dir("demo") / "demo.ipynb"
    nb = nbformat.read(notebook, as_version=4)
    nb.cells[0].source = "# Tarea de prueba del motor"
    nbformat.write(nb, notebook)
    done = run_cli("--course", str(course.root), "build", "demo")
    assert done.returncode != 0
    assert "does not state the by-hand rules" in done.stderr and "`double`" in done.stderr


def test_the_build_refuses_rules_declared_in_a_hidden_check_file(tmp_path):
    """Rules are public: does declaring BY_HAND among hidden checks stop the build?"""
    from conftest import run_cli

    course = copy_course(tmp_path / "course")
    hidden = course.checks_dir("demo") / "test_hidden.py"
    hidden.write_text(hidden.read_text() + "\nfrom autograder.checklib.forbidden import AUTOGRAD\n"
                      "from autograder.rules import ByHand\n"
                      "BY_HAND = [ByHand('counter', names=('Counter',), forbid=(AUTOGRAD,))]\n")
    done = run_cli("--course", str(course.root), "build", "demo")
    assert done.returncode != 0 and "declare BY_HAND in a public check file" in done.stderr


SELF_CHECK = """
from autograder.selfcheck import run_public_checks
for body in ("x.add(x)", "2 * x"):
    source = f"def double(x):\\n    return {body}"
    namespace = {"In": ["", source]}
    exec(source, namespace)
    print(run_public_checks("demo", "double", namespace))
    print("=====")
"""


def test_the_public_checks_show_the_rule_in_the_notebook(demo_course):
    """With only the released files, does `check("double")` show the rule, and zero the part when it is broken?"""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", SELF_CHECK], capture_output=True, text=True,
                          cwd=demo_course.release_dir("demo"), env={"PYTHONPATH": str(demo_course.release_dir("demo"))})
    broken, kept, _ = done.stdout.split("=====")
    assert "✘ Regla: `double` a mano, sin `torch.add` ni autograd" in broken
    assert "se ejecutó `add`" in broken and "en la celda [1], línea 2" in broken and "**0 de 1**" in broken
    assert "✔ Regla: `double` a mano" in kept and "**1 de 1**" in kept
