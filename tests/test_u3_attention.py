"""Unit 3 as graded: the solution earns everything, the release nothing, each planted bug loses exactly the
parts that should catch it (and those built on the buggy piece), each shortcut through a forbidden built-in
loses its parts, and correct styles of other kinds keep full marks."""

import json
import shutil
from dataclasses import dataclass

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import (
    REPO, Shortcut, checks_of, copy_course, expect_shortcut_voids, failing_checks, grade, with_cells, write,
)

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Bug:
    code: str
    loses: set[str]  # the grade cells that must lose points (and no other)


BUGS = {
    "rnn_sigmoid_instead_of_tanh": Bug(
        "def rnn_forward(x, h0, W_xh, W_hh, b_h):\n"
        "    h, outputs = h0, []\n"
        "    for x_t in x:\n"
        "        h = torch.sigmoid(x_t @ W_xh + h @ W_hh + b_h)\n"
        "        outputs.append(h)\n"
        "    return torch.stack(outputs), h",
        {"rnn"}),
    "rnn_outputs_shifted_by_one_step": Bug(
        "def rnn_forward(x, h0, W_xh, W_hh, b_h):\n"
        "    h, outputs = h0, []\n"
        "    for x_t in x:\n"
        "        outputs.append(h)\n"
        "        h = torch.tanh(x_t @ W_xh + h @ W_hh + b_h)\n"
        "    return torch.stack(outputs), h",
        {"rnn"}),
    "rnn_state_detached_between_steps": Bug(
        "def rnn_forward(x, h0, W_xh, W_hh, b_h):\n"
        "    h, outputs = h0, []\n"
        "    for x_t in x:\n"
        "        h = torch.tanh(x_t @ W_xh + h.detach() @ W_hh + b_h)\n"
        "        outputs.append(h)\n"
        "    return torch.stack(outputs), h",
        {"rnn"}),
    "lstm_gates_in_the_wrong_order": Bug(
        "def lstm_cell(x, h, c, W_x, W_h, b):\n"
        "    i, f, o, g = (x @ W_x + h @ W_h + b).chunk(4, dim=1)\n"
        "    c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)\n"
        "    return torch.sigmoid(o) * torch.tanh(c_new), c_new",
        {"lstm", "language_model"}),
    "clipping_each_tensor_on_its_own": Bug(
        "def clip_gradients(grads, theta):\n"
        "    return [g * min(1.0, theta / (float(g.norm()) + 1e-12)) for g in grads]",
        {"clipping", "language_model"}),
    "clipping_epsilon_subtracted_from_the_norm": Bug(  # found by the mutation audit: tiny gradients flip sign
        "def clip_gradients(grads, theta):\n"
        "    norm = float(torch.sqrt(sum((g ** 2).sum() for g in grads)))\n"
        "    scale = min(1.0, theta / (norm - 1e-12)) if norm > 0 else 1.0\n"
        "    return [g * scale for g in grads]",
        {"clipping"}),
    "clipping_skipped_for_norms_under_one": Bug(  # found by the mutation audit
        "def clip_gradients(grads, theta):\n"
        "    norm = float(torch.sqrt(sum((g ** 2).sum() for g in grads)))\n"
        "    scale = min(1.0, theta / (norm + 1e-12)) if norm > 1 else 1.0\n"
        "    return [g * scale for g in grads]",
        {"clipping", "language_model"}),
    "masking_after_the_softmax": Bug(
        "def masked_softmax(X, valid_lens):\n"
        "    weights = torch.softmax(X, dim=-1)\n"
        "    if valid_lens is None:\n"
        "        return weights\n"
        "    lens = valid_lens[:, None] if valid_lens.dim() == 1 else valid_lens\n"
        "    return weights * (torch.arange(X.shape[-1], device=X.device) < lens[..., None])",
        {"masked_softmax", "attention", "multihead", "transformer"}),
    "attention_scaled_by_d": Bug(
        "def scaled_dot_product_attention(queries, keys, values, valid_lens=None):\n"
        "    weights = masked_softmax(queries @ keys.transpose(1, 2) / queries.shape[-1], valid_lens)\n"
        "    return weights @ values, weights",
        {"attention"}),
    "heads_split_without_the_transpose": Bug(
        "class _Heads(MultiHeadAttention):\n"
        "    def forward(self, queries, keys, values, valid_lens=None):\n"
        "        B, Q, D = queries.shape\n"
        "        h = self.num_heads\n"
        "        def split(X):\n"
        "            return X.reshape(X.shape[0] * h, X.shape[1], D // h)\n"
        "        q, k, v = split(self.W_q(queries)), split(self.W_k(keys)), split(self.W_v(values))\n"
        "        lens = None if valid_lens is None else valid_lens.repeat_interleave(h)\n"
        "        weights = masked_softmax(q @ k.transpose(1, 2) / math.sqrt(D // h), lens)\n"
        "        return self.W_o((weights @ v).reshape(B, Q, D))\n"
        "MultiHeadAttention = _Heads",
        {"multihead", "transformer", "classifier"}),
    "sin_and_cos_swapped": Bug(
        "_PE = PositionalEncoding\n"
        "class PositionalEncoding(_PE):\n"
        "    def __init__(self, num_hiddens, dropout=0.0, max_len=1000):\n"
        "        super().__init__(num_hiddens, dropout, max_len)\n"
        "        P = self.P.clone()\n"
        "        self.P[:, :, 0::2], self.P[:, :, 1::2] = P[:, :, 1::2], P[:, :, 0::2]",
        {"positional", "classifier"}),
    "pre_norm_instead_of_post_norm": Bug(
        "def _pre_norm(self, X, valid_lens=None):\n"
        "    Z = self.addnorm1.ln(X)\n"
        "    Y = X + self.addnorm1.dropout(self.attention(Z, Z, Z, valid_lens))\n"
        "    return Y + self.addnorm2.dropout(self.ffn(self.addnorm2.ln(Y)))\n"
        "TransformerEncoderBlock.forward = _pre_norm",
        {"transformer", "classifier"}),
    "dropout_on_the_residual_branch": Bug(  # found by the mutation audit: the same as d2l's block in eval mode
        "def _dropped_residual(self, X, valid_lens=None):\n"
        "    Y = self.addnorm1(self.attention(X, X, X, valid_lens), X)\n"
        "    return self.addnorm2(self.ffn(Y), Y)\n"
        "TransformerEncoderBlock.forward = _dropped_residual",
        {"transformer"}),
    "bleu_without_clipping": Bug(
        "def bleu(pred_tokens, label_tokens, k):\n"
        "    score = math.exp(min(0, 1 - len(label_tokens) / len(pred_tokens)))\n"
        "    for n in range(1, k + 1):\n"
        "        label = {tuple(label_tokens[i:i + n]) for i in range(len(label_tokens) - n + 1)}\n"
        "        pred = [tuple(pred_tokens[i:i + n]) for i in range(len(pred_tokens) - n + 1)]\n"
        "        score *= (sum(g in label for g in pred) / len(pred)) ** (0.5 ** n)\n"
        "    return score",
        {"bleu"}),
    "bleu_without_the_brevity_penalty": Bug(
        "_bleu = bleu\n"
        "def bleu(pred_tokens, label_tokens, k):\n"
        "    return _bleu(pred_tokens, label_tokens, k) / math.exp(min(0, 1 - len(label_tokens) / len(pred_tokens)))",
        {"bleu"}),
}

#: Shortcuts: right answers through what a by-hand rule forbids; each must cost exactly the grade cells in `voids`.
SHORTCUTS = {
    "rnn_forward_through_nn_rnn": Shortcut(
        "def rnn_forward(x, h0, W_xh, W_hh, b_h):\n"
        "    rnn = nn.RNN(W_xh.shape[0], W_xh.shape[1], dtype=x.dtype, device=x.device)\n"
        "    params = {'weight_ih_l0': W_xh.T, 'weight_hh_l0': W_hh.T, 'bias_ih_l0': b_h,\n"
        "              'bias_hh_l0': torch.zeros_like(b_h)}\n"
        "    outputs, h_n = torch.func.functional_call(rnn, params, (x, h0[None]))\n"
        "    return outputs, h_n[0]",
        "`nn.RNN`", {"rnn"}),
    "rnn_forward_through_torch_rnn_tanh_cell": Shortcut(
        "def rnn_forward(x, h0, W_xh, W_hh, b_h):\n"
        "    h, outputs = h0, []\n"
        "    for x_t in x:\n"
        "        h = torch.rnn_tanh_cell(x_t, h, W_xh.T, W_hh.T, b_h, torch.zeros_like(b_h))\n"
        "        outputs.append(h)\n"
        "    return torch.stack(outputs), h",
        "`nn.RNN`", {"rnn"}),
    "lstm_cell_through_torch_lstm_cell": Shortcut(
        "def lstm_cell(x, h, c, W_x, W_h, b):\n"
        "    return torch.lstm_cell(x, (h, c), W_x.T, W_h.T, b, torch.zeros_like(b))",
        "`nn.LSTMCell`", {"lstm", "language_model"}),
    "clip_gradients_through_clip_grad_norm": Shortcut(
        "def clip_gradients(grads, theta):\n"
        "    params = [torch.zeros_like(g, requires_grad=True) for g in grads]\n"
        "    for p, g in zip(params, grads):\n"
        "        p.grad = g.clone()\n"
        "    torch.nn.utils.clip_grad_norm_(params, theta)\n"
        "    return [p.grad for p in params]",
        "`clip_grad_norm_`", {"clipping", "language_model"}),
    "attention_through_f_scaled_dot_product_attention": Shortcut(
        "def scaled_dot_product_attention(queries, keys, values, valid_lens=None):\n"
        "    mask = None\n"
        "    if valid_lens is not None:\n"
        "        lens = valid_lens[:, None] if valid_lens.dim() == 1 else valid_lens\n"
        "        mask = torch.arange(keys.shape[1], device=keys.device) < lens[..., None]\n"
        "    out = F.scaled_dot_product_attention(queries, keys, values, attn_mask=mask)\n"
        "    weights = masked_softmax(queries @ keys.transpose(1, 2) / math.sqrt(queries.shape[-1]), valid_lens)\n"
        "    return out, weights",
        "`F.scaled_dot_product_attention`", {"attention"}),
    "multihead_wrapping_nn_multiheadattention": Shortcut(
        "def _builtin_forward(self, queries, keys, values, valid_lens=None):\n"
        "    D = queries.shape[-1]\n"
        "    mha = nn.MultiheadAttention(D, self.num_heads, bias=self.W_q.bias is not None, batch_first=True,\n"
        "                                dtype=queries.dtype, device=queries.device)\n"
        "    params = {'in_proj_weight': torch.cat([self.W_q.weight, self.W_k.weight, self.W_v.weight]),\n"
        "              'out_proj.weight': self.W_o.weight}\n"
        "    if self.W_q.bias is not None:\n"
        "        params['in_proj_bias'] = torch.cat([self.W_q.bias, self.W_k.bias, self.W_v.bias])\n"
        "        params['out_proj.bias'] = self.W_o.bias\n"
        "    mask = None if valid_lens is None else torch.arange(keys.shape[1], device=keys.device) >= valid_lens[:, None]\n"
        "    mha.train(self.training)\n"
        "    return torch.func.functional_call(mha, params, (queries, keys, values),\n"
        "                                      {'key_padding_mask': mask, 'need_weights': False})[0]\n"
        "MultiHeadAttention.forward = _builtin_forward",
        "MultiheadAttention", {"multihead", "transformer", "classifier"}),  # the block's rule too
    "block_through_f_multi_head_attention_forward": Shortcut(
        "def _functional_forward(self, X, valid_lens=None):\n"
        "    a = self.attention\n"
        "    bias = a.W_q.bias is not None\n"
        "    mask = None if valid_lens is None else torch.arange(X.shape[1], device=X.device) >= valid_lens[:, None]\n"
        "    Xt = X.transpose(0, 1)\n"
        "    att, _ = F.multi_head_attention_forward(\n"
        "        Xt, Xt, Xt, X.shape[-1], a.num_heads, torch.cat([a.W_q.weight, a.W_k.weight, a.W_v.weight]),\n"
        "        torch.cat([a.W_q.bias, a.W_k.bias, a.W_v.bias]) if bias else None, None, None, False, 0.0,\n"
        "        a.W_o.weight, a.W_o.bias, training=self.training, key_padding_mask=mask, need_weights=False)\n"
        "    Y = self.addnorm1(X, att.transpose(0, 1))\n"
        "    return self.addnorm2(Y, self.ffn(Y))\n"
        "TransformerEncoderBlock.forward = _functional_forward",
        "`nn.TransformerEncoderLayer`", {"transformer", "classifier"}),
    "recording_switched_off_anywhere": Shortcut(
        "import sys\nloaded = sorted(sys.modules)", "",
        {"rnn", "lstm", "clipping", "language_model", "attention", "multihead", "transformer", "classifier"}),
}

#: Correct solutions in other styles: each keeps full marks.
ALTERNATIVES = {
    "functional_dropout_in_addnorm": (  # the dropout on the sublayer's output, written the other way round
        "def _functional_addnorm(self, X, Y):\n"
        "    return self.ln(F.dropout(Y, self.dropout.p, self.training) + X)\n"
        "AddNorm.forward = _functional_addnorm"),
    "einsum_attention_and_minus_infinity_masking": (
        "def masked_softmax(X, valid_lens):\n"
        "    if valid_lens is None:\n"
        "        return X.softmax(dim=-1)\n"
        "    lens = valid_lens.reshape(X.shape[0], -1).expand(X.shape[0], X.shape[1])\n"
        "    keep = torch.arange(X.shape[-1], device=X.device) < lens[..., None]\n"
        "    return X.masked_fill(~keep, float('-inf')).softmax(dim=-1)\n"
        "def scaled_dot_product_attention(queries, keys, values, valid_lens=None):\n"
        "    scores = torch.einsum('bqd,bkd->bqk', queries, keys) / queries.shape[-1] ** 0.5\n"
        "    weights = masked_softmax(scores, valid_lens)\n"
        "    return torch.einsum('bqk,bkv->bqv', weights, values), weights"),
    "sliced_lstm_and_vector_norm_clipping": (
        "def lstm_cell(x, h, c, W_x, W_h, b):\n"
        "    H = h.shape[1]\n"
        "    z = torch.addmm(b, x, W_x) + h @ W_h\n"
        "    i, f, g, o = z[:, :H].sigmoid(), z[:, H:2 * H].sigmoid(), z[:, 2 * H:3 * H].tanh(), z[:, 3 * H:].sigmoid()\n"
        "    c_new = f * c + i * g\n"
        "    return o * c_new.tanh(), c_new\n"
        "def clip_gradients(grads, theta):\n"
        "    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))\n"
        "    return [g * torch.clamp(theta / (norm + 1e-10), max=1.0) for g in grads]"),
    "exp_log_encoding_and_counter_bleu": (
        "from collections import Counter\n"
        "class PositionalEncoding(nn.Module):\n"
        "    def __init__(self, num_hiddens, dropout=0.0, max_len=1000):\n"
        "        super().__init__()\n"
        "        self.dropout = nn.Dropout(dropout)\n"
        "        angles = torch.arange(max_len)[:, None] * torch.exp(\n"
        "            -math.log(10000.0) * torch.arange(0, num_hiddens, 2) / num_hiddens)\n"
        "        P = torch.stack([angles.sin(), angles.cos()], dim=-1).reshape(1, max_len, num_hiddens)\n"
        "        self.register_buffer('P', P.float())\n"
        "    def forward(self, X):\n"
        "        return self.dropout(X + self.P[:, :X.shape[1]].to(X.dtype))\n"
        "def bleu(pred_tokens, label_tokens, k):\n"
        "    score = math.exp(min(0.0, 1 - len(label_tokens) / len(pred_tokens)))\n"
        "    for n in range(1, k + 1):\n"
        "        pred = Counter(tuple(pred_tokens[i:i + n]) for i in range(len(pred_tokens) - n + 1))\n"
        "        label = Counter(tuple(label_tokens[i:i + n]) for i in range(len(label_tokens) - n + 1))\n"
        "        matches = sum(min(count, label[gram]) for gram, count in pred.items())\n"
        "        score *= (matches / (len(pred_tokens) - n + 1)) ** (0.5 ** n)\n"
        "    return score"),
}

#: Attention that loops over the batch, or over the queries: right values, only the speed checks fail.
LOOPS = {
    "attention_looping_over_the_batch": (
        "def scaled_dot_product_attention(queries, keys, values, valid_lens=None):\n"
        "    outs, ws = [], []\n"
        "    for b in range(queries.shape[0]):\n"
        "        lens = None if valid_lens is None else valid_lens[b:b + 1]\n"
        "        w = masked_softmax(queries[b:b + 1] @ keys[b:b + 1].transpose(1, 2) / math.sqrt(queries.shape[-1]),\n"
        "                           lens)\n"
        "        outs.append(w @ values[b:b + 1])\n"
        "        ws.append(w)\n"
        "    return torch.cat(outs), torch.cat(ws)",
        "test_attention_is_vectorised_over_the_batch"),
    "attention_looping_over_the_queries": (
        "def scaled_dot_product_attention(queries, keys, values, valid_lens=None):\n"
        "    scale = math.sqrt(queries.shape[-1])\n"
        "    outs, ws = [], []\n"
        "    for q in range(queries.shape[1]):\n"
        "        lens = None if valid_lens is None else (valid_lens if valid_lens.dim() == 1 else valid_lens[:, q])\n"
        "        w = masked_softmax(queries[:, q:q + 1] @ keys.transpose(1, 2) / scale, lens)\n"
        "        outs.append(w @ values)\n"
        "        ws.append(w)\n"
        "    return torch.cat(outs, dim=1), torch.cat(ws, dim=1)",
        "test_attention_is_vectorised_over_the_queries"),
}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    root = tmp_path_factory.mktemp("u3")
    course = copy_course(root / "course", source=REPO, assignments=("u3_attention",))
    for folder in ("release", "solutions"):
        shutil.copytree(REPO / folder / "u3_attention", course.root / folder / "u3_attention")
    subs = root / "subs"
    subs.mkdir()
    solution = REPO / "solutions" / "u3_attention" / "u3_attention.ipynb"
    shutil.copy(solution, subs / "solution.ipynb")
    shutil.copy(REPO / "release" / "u3_attention" / "u3_attention.ipynb", subs / "release.ipynb")
    for name, bug in BUGS.items():
        write(with_cells(solution, bug.code), subs / f"{name}.ipynb")
    for name, shortcut in SHORTCUTS.items():
        write(with_cells(solution, shortcut.code), subs / f"shortcut_{name}.ipynb")
    for name, code in ALTERNATIVES.items():
        write(with_cells(solution, code), subs / f"alternative_{name}.ipynb")
    for name, (code, _) in LOOPS.items():
        write(with_cells(solution, code), subs / f"loop_{name}.ipynb")
    for example in ("correct", "partial", "broken", "empty"):
        shutil.copy(REPO / "examples" / "u3_attention" / f"{example}.ipynb", subs / f"example_{example}.ipynb")
    # 6 s per call, not the 3 s of the other units' tests: each of the classifier check's five training calls (100
    # steps) takes about 2.4 s at the VM's slow hours, two slots grading at once, and at 3 s one in a few timed out.
    return grade(course, "u3_attention", [subs], root / "out", workers=2, call_seconds=6)


def cells_losing_points(result: dict) -> set[str]:
    return {g for g, c in result["extra_data"]["grade_cells"].items() if c["score"] < c["max_score"]}


def test_the_solution_earns_every_point(results):
    """Does the solution notebook score max_score (50), with every check and every by-hand rule passing?"""
    assert results["solution"]["score"] == results["solution"]["max_score"] == 50
    assert failing_checks(results["solution"]) == set()


def test_the_release_earns_nothing(results):
    """Does the untouched release score 0, each check saying what is not implemented yet?"""
    assert results["release"]["score"] == 0
    assert all("todavía no está implementada" in t["output"] for t in checks_of(results["release"]))


@pytest.mark.parametrize("name", BUGS)
def test_each_planted_bug_loses_exactly_the_parts_that_catch_it(results, name):
    """Does the bug cost points in the parts that should catch it (and those built on the buggy piece), and
    nowhere else?"""
    assert cells_losing_points(results[name]) == BUGS[name].loses


@pytest.mark.parametrize("name", SHORTCUTS)
def test_each_shortcut_loses_its_whole_part(results, name):
    """Does a right answer through a forbidden built-in (or with the recording switched off) cost exactly its
    parts, with the rule saying why, while every case still computed the right values?"""
    expect_shortcut_voids(results[f"shortcut_{name}"], SHORTCUTS[name])


@pytest.mark.parametrize("name", ALTERNATIVES)
def test_correct_styles_keep_full_marks(results, name):
    """Do einsum and -inf masking, a sliced LSTM with vector-norm clipping, and an exp/log encoding with a
    Counter BLEU keep every point?"""
    assert results[f"alternative_{name}"]["score"] == 50, failing_checks(results[f"alternative_{name}"])


@pytest.mark.parametrize("name", LOOPS)
def test_attention_loops_fail_only_their_speed_check_by_a_wide_margin(results, name):
    """Is a correct attention that loops over the batch (or the queries) penalised only by its speed check,
    missing the limit by a wide margin?"""
    code, check = LOOPS[name]
    result = results[f"loop_{name}"]
    assert failing_checks(result) == {check}
    timing = next(t for t in result["tests"] if t["extra_data"]["check"] == check)
    case = timing["extra_data"]["cases"][0]
    assert case["properties"]["ratio"] > 2 * case["properties"]["max_ratio"]


def test_the_bundled_examples_score_as_documented(results):
    """Do the examples that `make demo` grades get the scores README states?"""
    expected = json.loads((REPO / "examples" / "u3_attention" / "expected.json").read_text())
    assert {name: results[f"example_{name}"]["score"] for name in expected} == expected


def test_the_solution_passes_its_public_checks_in_a_kernel_with_only_the_released_files(tmp_path):
    """Run as a student would (a Jupyter kernel in the downloaded folder), do all public checks pass, each part
    with a rule showing it kept?"""
    workdir = tmp_path / "student"
    shutil.copytree(REPO / "solutions" / "u3_attention", workdir, ignore=shutil.ignore_patterns("__pycache__"))
    nb = nbformat.read(workdir / "u3_attention.ipynb", as_version=4)
    # Last, so the checks run first: `import autograder` in a notebook counts as tampering with the rules.
    nb.cells.append(nbformat.v4.new_code_cell("import autograder\nprint(autograder.__file__)"))
    NotebookClient(nb, timeout=600, kernel_name="python3", allow_errors=True,
                   resources={"metadata": {"path": str(workdir)}}).execute()
    shown = ["".join(o.get("text", "") or o.get("data", {}).get("text/markdown", "") for o in cell.get("outputs", []))
             for cell in nb.cells]
    assert shown[-1].startswith(str(workdir / "autograder"))
    assert not [o for cell in nb.cells[:-1] for o in cell.get("outputs", []) if o.output_type == "error"]
    checks = [text for cell, text in zip(nb.cells, shown) if cell.metadata.get("nbgrader", {}).get("grade")]
    assert len(checks) == 11
    for text in checks:
        assert "Comprobaciones públicas de" in text and "✘" not in text, text
    assert sum(text.count("✔ Regla") for text in checks) == 8
