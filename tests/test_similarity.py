"""`autograder similarity`: who handed in the same code (winnowing over normalised graded code).

The class is generated from the real `u1_backprop` release: the solution, five students
who each wrote their own version of five graded parts, disguised copies (renamed,
reformatted, commented, statements reordered, one pasted into a fresh notebook
without metadata, one copying only two parts), students who left the stubs, and a
notebook that is not JSON.
"""

from __future__ import annotations

import copy
import csv
import itertools
import json
import os
import random
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autograder.course import Course
from autograder.grading.discover import discover
from autograder.similarity import Settings, similarity_report
from autograder.similarity import extract
from autograder.similarity.normalize import tokens
from autograder.similarity.page import format_similarity
from autograder.similarity.winnow import fingerprints, kgram_hashes, winnow
from tests.conftest import REPO, run_cli

COURSE = Course(REPO)
ASSIGNMENT = "u1_backprop"
RELEASE = REPO / "release" / ASSIGNMENT / "u1_backprop.ipynb"
SOLUTION = REPO / "solutions" / ASSIGNMENT / "u1_backprop.ipynb"
PARTS = ("linear_code", "relu_code", "softmax_code", "cross_entropy_code", "vectorized_code")

# --- Five students' own implementations of the five parts (each written in a different style) ---

OWN = {
    "ana": {
        "linear_code": '''
def linear_forward(x, W, b):
    # x: (N, D), W: (D, M), b: (M,)  ->  out: (N, M)
    out = torch.matmul(x, W) + b.unsqueeze(0)
    cache = (x, W, b)
    return out, cache


def linear_backward(dout, cache):
    # dout: (N, M)  ->  dx: (N, D), dW: (D, M), db: (M,)
    x, W, b = cache
    dx = torch.matmul(dout, W.t())
    dW = torch.matmul(x.t(), dout)
    db = torch.sum(dout, dim=0)
    return dx, dW, db
''',
        "relu_code": '''
def relu_forward(x):
    out = torch.maximum(x, torch.zeros_like(x))
    cache = x
    return out, cache


def relu_backward(dout, cache):
    dx = dout.clone()
    dx[cache <= 0] = 0
    return dx
''',
        "softmax_code": '''
def softmax(logits):
    z = logits - torch.amax(logits, dim=-1, keepdim=True)
    e = torch.exp(z)
    probs = e / torch.sum(e, dim=-1, keepdim=True)
    return probs
''',
        "cross_entropy_code": '''
def softmax_cross_entropy(logits, y):
    # logits: (N, C), y: (N,) enteros  ->  loss: (), dlogits: (N, C)
    N, C = logits.shape
    p = softmax(logits)
    onehot = torch.zeros_like(p)
    onehot[torch.arange(N), y] = 1.0
    loss = -(onehot * torch.log(p)).sum() / N
    dlogits = (p - onehot) / N
    return loss, dlogits
''',
        "vectorized_code": '''
def pairwise_sq_distances(X, Y):
    # X: (N, D), Y: (M, D)  ->  dist2: (N, M), distancias al cuadrado
    dist2 = torch.cdist(X, Y) ** 2
    return dist2
''',
    },
    "bruno": {
        "linear_code": '''
def linear_forward(x, W, b):
    out = torch.einsum("nd,dm->nm", x, W)
    out += b
    cache = x, W, b
    return out, cache


def linear_backward(dout, cache):
    inputs, weights, _ = cache
    dx = torch.einsum("nm,dm->nd", dout, weights)
    dW = torch.einsum("nd,nm->dm", inputs, dout)
    db = dout.sum(0)
    return dx, dW, db
''',
        "relu_code": '''
def relu_forward(x):
    out = torch.where(x > 0, x, 0.0)
    cache = x
    return out, cache


def relu_backward(dout, cache):
    dx = torch.where(cache > 0, dout, torch.zeros_like(dout))
    return dx
''',
        "softmax_code": '''
def softmax(logits):
    probs = torch.exp(logits - torch.logsumexp(logits, dim=-1, keepdim=True))
    return probs
''',
        "cross_entropy_code": '''
def softmax_cross_entropy(logits, y):
    logp = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    loss = -logp.gather(1, y.view(-1, 1)).mean()
    dlogits = logp.exp()
    dlogits.scatter_add_(1, y.view(-1, 1), -torch.ones_like(logp[:, :1]))
    dlogits /= logits.shape[0]
    return loss, dlogits
''',
        "vectorized_code": '''
def pairwise_sq_distances(X, Y):
    diff = X[:, None, :] - Y[None, :, :]  # (N, M, D)
    dist2 = (diff ** 2).sum(-1)
    return dist2
''',
    },
    "carla": {
        "linear_code": '''
def linear_forward(x, W, b):
    cache = (x, W, b)
    out = torch.addmm(b, x, W)
    return out, cache


def linear_backward(dout, cache):
    x, W, _b = cache
    dW = x.transpose(0, 1).mm(dout)
    dx = dout.mm(W.transpose(0, 1))
    db = dout.sum(axis=0)
    return dx, dW, db
''',
        "relu_code": '''
def relu_forward(x):
    mask = x > 0
    out = x * mask.to(x.dtype)
    cache = mask
    return out, cache


def relu_backward(dout, cache):
    dx = dout * cache
    return dx
''',
        "softmax_code": '''
def softmax(logits):
    m, _ = logits.max(-1, keepdim=True)
    num = (logits - m).exp()
    den = num.sum(-1).unsqueeze(-1)
    probs = num / den
    return probs
''',
        "cross_entropy_code": '''
def softmax_cross_entropy(logits, y):
    probs = softmax(logits)
    target = F.one_hot(y, num_classes=logits.shape[1]).to(logits.dtype)
    loss = -torch.sum(target * torch.log(probs + 1e-12)) / len(y)
    dlogits = (probs - target) / len(y)
    return loss, dlogits
''',
        "vectorized_code": '''
def pairwise_sq_distances(X, Y):
    dist2 = (X * X).sum(1)[:, None] + (Y * Y).sum(1)[None, :] - 2.0 * torch.mm(X, Y.t())
    dist2 = torch.clamp(dist2, min=0.0)
    return dist2
''',
    },
    "diego": {
        "linear_code": '''
def linear_forward(x, W, b):
    n = x.shape[0]
    out = (x[:, :, None] * W[None, :, :]).sum(dim=1) + b.expand(n, -1)
    cache = (x, W, b)
    return out, cache


def linear_backward(dout, cache):
    x, W, b = cache
    dx = (dout[:, None, :] * W[None, :, :]).sum(dim=2)
    dW = (x[:, :, None] * dout[:, None, :]).sum(dim=0)
    db = torch.ones(dout.shape[0], dtype=dout.dtype) @ dout
    return dx, dW, db
''',
        "relu_code": '''
def relu_forward(x):
    out = (x + x.abs()) / 2
    cache = x
    return out, cache


def relu_backward(dout, cache):
    dx = dout * torch.sign(cache).clamp(min=0)
    return dx
''',
        "softmax_code": '''
def softmax(logits):
    probs = torch.empty_like(logits)
    flat = logits.reshape(-1, logits.shape[-1])
    rows = probs.view(-1, logits.shape[-1])
    for i in range(flat.shape[0]):
        row = flat[i] - flat[i].max()
        rows[i] = row.exp() / row.exp().sum()
    return probs
''',
        "cross_entropy_code": '''
def softmax_cross_entropy(logits, y):
    n = logits.shape[0]
    probs = softmax(logits)
    loss = 0.0
    dlogits = probs.clone()
    for i in range(n):
        loss = loss - torch.log(probs[i, y[i]])
        dlogits[i, y[i]] = dlogits[i, y[i]] - 1
    loss = loss / n
    dlogits = dlogits / n
    return loss, dlogits
''',
        "vectorized_code": '''
def pairwise_sq_distances(X, Y):
    dist2 = (torch.einsum("nd,nd->n", X, X).unsqueeze(1) - 2 * torch.einsum("nd,md->nm", X, Y)
             + torch.einsum("md,md->m", Y, Y).unsqueeze(0))
    dist2 = dist2.clamp(min=0)
    return dist2
''',
    },
    "elena": {
        "linear_code": '''
def linear_forward(x, W, b):
    out = F.linear(x, W.T, b)
    cache = {"x": x, "W": W}
    return out, cache


def linear_backward(dout, cache):
    dx = F.linear(dout, cache["W"])
    dW = F.linear(cache["x"].T, dout.T)
    db = dout.sum(dim=0, keepdim=False)
    return dx, dW, db
''',
        "relu_code": '''
def relu_forward(x):
    out = x.masked_fill(x < 0, 0)
    cache = x
    return out, cache


def relu_backward(dout, cache):
    dx = dout.masked_fill(cache < 0, 0)
    return dx
''',
        "softmax_code": '''
def softmax(logits):
    shift = logits.max(dim=-1).values.unsqueeze(-1)
    log_z = shift + torch.log(torch.exp(logits - shift).sum(dim=-1, keepdim=True))
    probs = torch.exp(logits - log_z)
    return probs
''',
        "cross_entropy_code": '''
def softmax_cross_entropy(logits, y):
    m = logits.amax(dim=1, keepdim=True)
    lse = m.squeeze(1) + (logits - m).exp().sum(dim=1).log()
    picked = logits[torch.arange(logits.shape[0]), y]
    loss = (lse - picked).mean()
    grad = torch.exp(logits - lse[:, None])
    grad[torch.arange(logits.shape[0]), y] -= 1.0
    dlogits = grad / logits.shape[0]
    return loss, dlogits
''',
        "vectorized_code": '''
def pairwise_sq_distances(X, Y):
    G = X @ Y.T
    nx = X.pow(2).sum(dim=1)
    ny = Y.pow(2).sum(dim=1)
    dist2 = F.relu(nx.unsqueeze(1) + ny.unsqueeze(0) - 2 * G)
    return dist2
''',
    },
}

# --- Disguised copies ---

#: The solution with every name changed, comments rewritten and independent statements swapped.
SOLUTION_RENAMED = {
    "linear_code": '''
def linear_forward(inp, weight, bias):
    # capa afín
    result = inp @ weight + bias
    saved = (inp, weight, bias)
    return result, saved


def linear_backward(grad_out, saved):
    inp, weight, bias = saved
    grad_b = grad_out.sum(dim=0)   # suma sobre el batch
    grad_w = inp.T @ grad_out
    grad_in = grad_out @ weight.T
    return grad_in, grad_w, grad_b
''',
    "relu_code": '''
def relu_forward(z):
    stash = z
    activ = z.clamp(min=0)
    return activ, stash


def relu_backward(g, stash):
    z = stash
    gz = g * (z > 0)
    return gz
''',
    "softmax_code": '''
def softmax(scores):
    centered = scores - scores.max(dim=-1, keepdim=True).values
    ex = centered.exp()
    p = ex / ex.sum(dim=-1, keepdim=True)
    return p
''',
    "cross_entropy_code": '''
def softmax_cross_entropy(scores, labels):
    # perdida y gradiente
    batch = scores.shape[0]
    centered = scores - scores.max(dim=1, keepdim=True).values
    idx = torch.arange(batch, device=scores.device)
    lp = centered - centered.exp().sum(dim=1, keepdim=True).log()
    total = -lp[idx, labels].mean()
    g = lp.exp()
    g[idx, labels] -= 1
    g = g / batch
    return total, g
''',
    "vectorized_code": '''
def pairwise_sq_distances(A, B):
    b2 = (B ** 2).sum(dim=1)
    a2 = (A ** 2).sum(dim=1, keepdim=True)
    d = (a2 + b2 - 2 * A @ B.T).clamp_min(0)
    return d
''',
}

#: The solution reformatted: docstrings, redundant parentheses, line breaks, other comments (and, below,
#: pasted into a fresh notebook without nbgrader metadata).
SOLUTION_REFORMATTED = {
    "linear_code": '''
def linear_forward(x, W, b):
    """Forward of the affine layer."""
    out = (x @ W) + b
    cache = (x,
             W,
             b)
    return out, cache

def linear_backward(dout, cache):
    """Backward of the affine layer."""
    x, W, b = cache
    dx = (dout @ W.T)
    dW = (x.T @ dout)
    db = dout.sum(dim = 0)
    return (dx, dW, db)
''',
    "relu_code": '''
def relu_forward(x):
    """ReLU."""
    out = x.clamp(min = 0)
    cache = x
    return (out, cache)

def relu_backward(dout, cache):
    x = cache
    dx = dout * ((x > 0))
    return dx
''',
    "softmax_code": '''
def softmax(logits):
    # estable numéricamente
    shifted = (logits
               - logits.max(dim=-1, keepdim=True).values)
    exp = shifted.exp()
    probs = exp / exp.sum(dim=-1,
                          keepdim=True)
    return probs
''',
    "cross_entropy_code": '''
def softmax_cross_entropy(logits, y):
    """Cross-entropy with its gradient."""
    N = logits.shape[0]
    rows = torch.arange(N, device = logits.device)
    shifted = logits - logits.max(dim = 1, keepdim = True).values
    log_probs = shifted - shifted.exp().sum(dim = 1, keepdim = True).log()
    loss = -log_probs[rows, y].mean()
    dlogits = log_probs.exp()
    dlogits[rows, y] -= 1
    dlogits = dlogits / N
    return loss, dlogits
''',
    "vectorized_code": '''
def pairwise_sq_distances(X, Y):
    X2 = (X ** 2).sum(dim=1, keepdim=True)
    Y2 = (Y ** 2).sum(dim=1)
    dist2 = ((X2 + Y2) - (2 * X @ Y.T)).clamp_min(0)
    return dist2
''',
}

#: Ana's code renamed and reordered, with a `<script>` in a string the page must escape.
ANA_COPY = {
    "linear_code": '''
def linear_forward(a, w, c):
    res = torch.matmul(a, w) + c.unsqueeze(0)
    keep = (a, w, c)
    print("<script>alert('copied')</script>")
    return res, keep


def linear_backward(up, keep):
    a, w, c = keep
    gw = torch.matmul(a.t(), up)
    gc = torch.sum(up, dim=0)
    ga = torch.matmul(up, w.t())
    return ga, gw, gc
''',
    "relu_code": '''
def relu_forward(t):
    r = torch.maximum(t, torch.zeros_like(t))
    return r, t


def relu_backward(up, t):
    g = up.clone()
    g[t <= 0] = 0
    return g
''',
    "softmax_code": '''
def softmax(s):
    shifted = s - torch.amax(s, dim=-1, keepdim=True)
    ex = torch.exp(shifted)
    return ex / torch.sum(ex, dim=-1, keepdim=True)
''',
    "cross_entropy_code": '''
def softmax_cross_entropy(s, t):
    n, c = s.shape
    target = torch.zeros_like(softmax(s))
    pr = softmax(s)
    target[torch.arange(n), t] = 1.0
    dl = (pr - target) / n
    lo = -(target * torch.log(pr)).sum() / n
    return lo, dl
''',
    "vectorized_code": '''
def pairwise_sq_distances(P, Q):
    return torch.cdist(P, Q) ** 2
''',
}

#: Two of Bruno's parts, renamed; the other parts left as stubs.
BRUNO_PARTIAL = {
    "cross_entropy_code": '''
def softmax_cross_entropy(z, labels):
    lp = z - torch.logsumexp(z, dim=1, keepdim=True)
    loss = -lp.gather(1, labels.view(-1, 1)).mean()
    grad = lp.exp()
    grad.scatter_add_(1, labels.view(-1, 1), -torch.ones_like(lp[:, :1]))
    grad /= z.shape[0]
    return loss, grad
''',
    "vectorized_code": '''
def pairwise_sq_distances(A, B):
    d = A[:, None, :] - B[None, :, :]
    return (d ** 2).sum(-1)
''',
}

COPY_PAIRS = {
    frozenset(p) for p in [("solution", "sol_renamed"), ("solution", "sol_reformatted"),
                           ("sol_renamed", "sol_reformatted"), ("ana", "ana_copy"), ("bruno", "bruno_partial")]
}


def release() -> dict:
    return json.loads(RELEASE.read_text(encoding="utf-8"))


def solution_code() -> dict[str, str]:
    notebook = json.loads(SOLUTION.read_text(encoding="utf-8"))
    return {c["metadata"]["nbgrader"]["grade_id"]: "".join(c["source"]) for c in notebook["cells"]
            if c.get("metadata", {}).get("nbgrader", {}).get("grade_id") in PARTS}


def student_notebook(code: dict[str, str], *, strip_metadata: bool = False) -> dict:
    """The release with the given parts' solution cells replaced by `code`."""
    notebook = release()
    for cell in notebook["cells"]:
        grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        if grade_id in code:
            cell["source"] = code[grade_id].strip("\n")
        if strip_metadata:
            cell["metadata"] = {}
    return notebook


def class_notebooks() -> dict[str, dict | str]:
    students: dict[str, dict | str] = {"solution": student_notebook(solution_code())}
    students |= {name: student_notebook(code) for name, code in OWN.items()}
    students |= {
        "sol_renamed": student_notebook(SOLUTION_RENAMED),
        "sol_reformatted": student_notebook(SOLUTION_REFORMATTED, strip_metadata=True),
        "ana_copy": student_notebook(ANA_COPY),
        "bruno_partial": student_notebook(BRUNO_PARTIAL),
        "stubs_1": release(),
        "stubs_2": release(),
        "broken": '{"cells": [ {"cell_type": "code", "source": "x = 1"',
    }
    return students


def write_class(folder: Path, notebooks: dict[str, dict | str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, notebook in notebooks.items():
        text = notebook if isinstance(notebook, str) else json.dumps(notebook)
        (folder / f"{name}.ipynb").write_text(text, encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def generated_class(tmp_path_factory):
    """The class on disk and its report, with every pair that shares a fingerprint reported."""
    root = tmp_path_factory.mktemp("similarity")
    folder = write_class(root / "class", class_notebooks())
    submissions = discover([folder], assignment=ASSIGNMENT, notebook_name=RELEASE.name)
    report = similarity_report(course=COURSE, assignment=ASSIGNMENT, submissions=submissions,
                               out_dir=root / "out", top=10_000, min_score=0.0)
    return root, report


# --- Winnowing ---

@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 5), max_size=60), st.lists(st.integers(0, 5), max_size=60),
       st.lists(st.integers(0, 5), min_size=1, max_size=40), st.integers(1, 6), st.integers(1, 6))
def test_shared_run_of_window_plus_k_minus_1_tokens_always_yields_a_shared_fingerprint(
        left, right, shared, k, window):
    """Does any run of >= window + k - 1 tokens common to two streams give both a common fingerprint?"""
    shared = (shared * (window + k))[: window + k - 1 + len(shared) % 3]
    a = [f"t{t}" for t in left + shared + right]
    b = [f"t{t}" for t in right[::-1] + shared + left[::-1]]
    prints_a = {p.hash for p in fingerprints(a, k=k, window=window)}
    prints_b = {p.hash for p in fingerprints(b, k=k, window=window)}
    assert prints_a & prints_b


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 20), min_size=1, max_size=80), st.integers(1, 8))
def test_winnowing_keeps_exactly_the_rightmost_minimum_of_every_window(hashes, window):
    """Is every window's rightmost minimum kept, and nothing else (the robust winnowing of the paper)?"""
    picked = {(p.hash, p.start) for p in winnow(hashes, window)}
    if len(hashes) <= window:
        expected = {min(((h, i) for i, h in enumerate(hashes)), key=lambda hi: (hi[0], -hi[1]))}
    else:
        expected = set()
        for start in range(len(hashes) - window + 1):
            best = max(range(start, start + window), key=lambda i: (-hashes[i], i))
            expected.add((hashes[best], best))
    assert picked == expected


def test_fingerprints_do_not_depend_on_the_process():
    """Are hashes stable across processes (blake2b, not Python's salted `hash`), so reports are reproducible?"""
    code = "from autograder.similarity.winnow import kgram_hashes; print(kgram_hashes(['Assign', 'v1.0', 'Call'], 2))"
    runs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                           env={**os.environ, "PYTHONHASHSEED": seed}).stdout for seed in ("1", "2")}
    assert runs == {f"{kgram_hashes(['Assign', 'v1.0', 'Call'], 2)}\n"}


# --- Normalisation ---

def _texts(source: str, given=frozenset({"softmax", "torch"})) -> list[str]:
    return [t[0] for t in tokens([source], given=frozenset(given))]


def test_renaming_reformatting_comments_and_reordering_leave_the_stream_unchanged():
    """Do names, formatting, comments, docstrings and the order of independent statements vanish?"""
    written = _texts(OWN["ana"]["cross_entropy_code"])
    disguised = _texts('''
def softmax_cross_entropy(scores, target):
    """Docstring added."""
    n_rows, n_cls = scores.shape   # renamed
    probabilities = softmax(scores)
    mask = torch.zeros_like(probabilities)
    mask[torch.arange(n_rows), target] = 1.0
    grad = (probabilities - mask) / n_rows       # swapped with the loss: independent
    loss = (-(mask * torch.log(probabilities)).sum()
            / n_rows)
    return loss, grad
''')
    assert disguised == written


def test_dependent_statements_keep_their_order_and_library_calls_keep_their_names():
    """Is reordering dependent statements a change, and is `torch.matmul` not the same as `@`?"""
    assert _texts("def f(x):\n    y = x + 1\n    x = 2\n    return x, y") != \
        _texts("def f(x):\n    x = 2\n    y = x + 1\n    return x, y")
    assert _texts("def f(a, b):\n    return torch.matmul(a, b)") != _texts("def f(a, b):\n    return a @ b")
    assert _texts("def f(a):\n    return a.sum()") != _texts("def f(a):\n    return a.mean()")


def test_cells_that_do_not_parse_and_magics_still_give_tokens():
    """Does a cell with a syntax error fall back to tokenize, and are `%magic` / `!shell` lines ignored?"""
    broken = _texts("def f(x):\n    y = x +* 2\n    return y")
    assert broken and ".clamp" not in broken and "t.0" in broken
    assert _texts("%timeit f(1)\n!ls\ndef f(x):\n    return x.clamp(min=0)") == \
        _texts("def f(x):\n    return x.clamp(min=0)")


# --- The generated class ---

def _all_scores(report) -> dict[frozenset, float]:
    scores = {frozenset(p): 0.0 for p in itertools.combinations(report.students, 2)}
    scores |= {frozenset((p.student_a, p.student_b)): p.score for p in report.pairs}
    return scores


def test_every_copy_pair_ranks_above_every_independent_pair(generated_class):
    """Do all disguised copies (renamed, reformatted, reordered, pasted, partial) outrank all honest pairs?"""
    _, report = generated_class
    scores = _all_scores(report)
    copies = {pair: scores[pair] for pair in COPY_PAIRS}
    honest = {pair: score for pair, score in scores.items() if pair not in COPY_PAIRS}
    lowest_copy = min(copies.items(), key=lambda kv: kv[1])
    highest_honest = max(honest.items(), key=lambda kv: kv[1])
    print(f"\nlowest copy pair {sorted(lowest_copy[0])}: {lowest_copy[1]:.3f}; "
          f"highest independent pair {sorted(highest_honest[0])}: {highest_honest[1]:.3f}")
    print("copy pairs: " + ", ".join(f"{'/'.join(sorted(p))} {s:.2f}" for p, s in sorted(copies.items(),
                                                                                       key=lambda kv: -kv[1])))
    print(format_similarity(report))
    assert lowest_copy[1] > highest_honest[1]
    top = {frozenset((p.student_a, p.student_b)) for p in report.pairs[:len(COPY_PAIRS)]}
    assert top == COPY_PAIRS


def test_students_who_left_the_stubs_are_not_reported_as_copies(generated_class):
    """Are two untouched release notebooks shown as 'no code beyond the release', never as a pair?"""
    _, report = generated_class
    assert {"stubs_1", "stubs_2"} <= set(report.without_code)
    assert not any({"stubs_1", "stubs_2"} & {p.student_a, p.student_b} for p in report.pairs)


def test_a_notebook_that_is_not_json_is_listed_as_unreadable(generated_class):
    """Does a broken notebook appear in the report with its reason, instead of crashing the run?"""
    root, report = generated_class
    assert set(report.unreadable) == {"broken"} and "JSON" in report.unreadable["broken"]
    assert "broken" in (root / "out" / "similarity.html").read_text()


def test_code_in_more_submissions_than_max_holders_is_ignored_as_common(generated_class):
    """With --max-holders 2, is the solution copied by two students (three holders) ignored, other copies not?"""
    root, _ = generated_class
    submissions = discover([root / "class"], assignment=ASSIGNMENT, notebook_name=RELEASE.name)
    report = similarity_report(course=COURSE, assignment=ASSIGNMENT, submissions=submissions, out_dir=None,
                               top=10_000, min_score=0.0, settings=Settings(max_holders=2))
    scores = _all_scores(report)
    assert scores[frozenset(("solution", "sol_renamed"))] < 0.1 < scores[frozenset(("ana", "ana_copy"))]
    assert report.common > 0 and not report.files


def test_a_copy_pasted_into_a_notebook_without_metadata_is_matched_part_by_part(generated_class):
    """Are cells without nbgrader metadata placed in their part by the functions they define?"""
    _, report = generated_class
    assert set(report.students["sol_reformatted"].cells) == set(PARTS)
    pair = next(p for p in report.pairs if {p.student_a, p.student_b} == {"solution", "sol_reformatted"})
    assert {p.part for p in pair.parts} == set(PARTS)


def test_csv_and_html_are_written_and_the_page_escapes_the_students_code(generated_class):
    """Are both files in the output folder, the CSV one row per pair and part, the page offline and escaped?"""
    root, report = generated_class
    page = (root / "out" / "similarity.html").read_text(encoding="utf-8")
    assert "<script>" not in page and "&lt;script&gt;alert(&#x27;copied&#x27;)&lt;/script&gt;" in page
    assert "http://" not in page and "https://" not in page and "<link" not in page
    assert 'class="l hit"' in page
    with open(root / "out" / "similarity.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    pairs = {(r["student_a"], r["student_b"]) for r in rows}
    assert len(pairs) == len(report.pairs)
    ana = [r for r in rows if {r["student_a"], r["student_b"]} == {"ana", "ana_copy"}]
    assert ana[0]["part"] == "all" and {r["part"] for r in ana[1:]} <= set(PARTS) and len(ana) > 3
    assert all(r["lines_a"].startswith("cell ") for r in ana)


def test_the_cli_reads_a_zipped_nbgrader_tree_prints_the_pairs_and_writes_both_files(tmp_path):
    """Does `autograder similarity ASSIGNMENT CLASS.zip` find submissions as `grade` does and write the report?"""
    archive = tmp_path / "class.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for name, notebook in class_notebooks().items():
            if name in ("ana", "ana_copy", "carla", "stubs_1"):
                zf.writestr(f"submitted/{name}/{ASSIGNMENT}/{RELEASE.name}", json.dumps(notebook))
    done = run_cli("--course", str(REPO), "similarity", ASSIGNMENT, str(archive), "--out", str(tmp_path / "out"),
                   "--top", "5", timeout=300)
    assert done.returncode == 0, done.stderr
    assert "4 submissions" in done.stdout and "pairs scored" in done.stdout
    table = done.stdout.split("most shared parts")[1].strip().splitlines()
    assert "ana " in table[0] and "ana_copy" in table[0]
    assert (tmp_path / "out" / "similarity.html").is_file() and (tmp_path / "out" / "similarity.csv").is_file()


def test_malformed_notebooks_are_read_defensively(tmp_path):
    """Do odd notebooks (no cell list, non-text sources, odd metadata) give a reason or no code, never a crash?"""
    plan = extract.layout(RELEASE)
    with pytest.raises(extract.Unreadable, match="no list of cells"):
        extract.load(_json(tmp_path / "a.ipynb", {"cells": "nope", "nbformat": 4}))
    odd = {"nbformat": 4, "cells": [
        {"cell_type": "code", "source": 5},
        {"cell_type": "code", "source": ["def relu_forward(x):\n", 3]},
        {"cell_type": "code", "metadata": "x", "source": "def relu_forward(x):\n    return x.abs(), x"},
        {"cell_type": "code", "metadata": {"nbgrader": []}, "source": "def f(:\n  pass"},
        "not a cell",
    ]}
    parts = extract.student_parts(extract.load(_json(tmp_path / "b.ipynb", odd)), plan)
    assert set(parts) == {"relu_code", "other"}  # placed by the function it defines; the broken cell is kept
    assert tokens([c.source for c in parts["other"]])


def _json(path: Path, data) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


# --- Scale ---

_NAMES = ["x", "dout", "logits", "X", "Y", "cache", "W", "b", "y", "probs"]
_METHODS = ["sum()", "mean()", "abs()", "norm()", "std()", "max()", "min()", "exp()", "log1p()", "sqrt()",
            "square()", "var()", "t()", "flatten()", "double()", "clone()", "detach()", "cumsum(0)", "sign()"]


def _own_line(rng: random.Random, j: int) -> str:
    """A statement of the student's own (a check, a debug value), random in shape and constants."""
    terms = [f"{rng.choice(_NAMES)}." + ".".join(rng.choices(_METHODS, k=rng.randint(1, 3)))
             for _ in range(rng.randint(1, 3))]
    terms.append(f"{rng.random():.6f}")
    rng.shuffle(terms)
    expression = terms[0]
    for term in terms[1:]:
        expression = f"({expression} {rng.choice('+-*/')} {term})"
    return f"    _t{j} = {expression}"


def _random_student(rng: random.Random) -> dict[str, str]:
    """A student's five parts: one of the five styles per part, plus a few statements of their own."""
    code = {}
    for part in PARTS:
        lines = OWN[rng.choice(sorted(OWN))][part].strip("\n").split("\n")
        at = max(i for i, line in enumerate(lines) if line.strip().startswith("return"))
        code[part] = "\n".join(lines[:at] + [_own_line(rng, j) for j in range(rng.randint(1, 3))] + lines[at:])
    return code


@pytest.mark.slow
def test_a_class_of_1000_is_processed_quickly_without_comparing_every_pair(tmp_path):
    """Is a class of 1,000 fingerprinted and searched in well under a minute, scoring only pairs that share code?"""
    rng = random.Random(2021)
    n, planted = 1000, 20
    template = release()
    folder = tmp_path / "class"
    folder.mkdir()
    codes = [_random_student(rng) for _ in range(n - planted)]
    copies = {}
    for i in range(planted):  # copies of a random classmate, renamed
        source = codes[rng.randrange(len(codes))]
        copies[i] = {part: code.replace("dout", "g_out").replace("logits", "z").replace("dist2", "dd")
                     for part, code in source.items()}
    for i, code in enumerate(codes + list(copies.values())):
        notebook = copy.deepcopy(template)
        for cell in notebook["cells"]:
            grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
            if grade_id in code:
                cell["source"] = code[grade_id]
        (folder / f"s{i:04d}.ipynb").write_text(json.dumps(notebook), encoding="utf-8")
    submissions = discover([folder], assignment=ASSIGNMENT, notebook_name=RELEASE.name)
    started = time.perf_counter()
    report = similarity_report(course=COURSE, assignment=ASSIGNMENT, submissions=submissions,
                               out_dir=tmp_path / "out", top=100, min_score=0.0)
    seconds = time.perf_counter() - started
    possible = n * (n - 1) // 2
    print(f"\n{n} submissions in {seconds:.1f} s; pairs scored {report.compared} of {possible} "
          f"({100 * report.compared / possible:.2f} %), {report.sharing} share a fingerprint; "
          f"{report.common} common fingerprints ignored")
    assert len(report.students) == n
    assert report.compared < possible / 100 and report.sharing < possible / 20  # the property; time is printed
    top = [(p.student_a, p.student_b) for p in report.pairs[:planted]]
    planted_names = {f"s{n - planted + i:04d}" for i in range(planted)}
    assert all(planted_names & set(pair) for pair in top)
