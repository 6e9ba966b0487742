"""Unit 4 as graded: the solution earns everything, the release nothing, each planted bug loses exactly the
parts that should catch it (and the trainings built on the buggy piece), each shortcut through a forbidden loss
loses its parts, correct styles of other kinds keep full marks, and a loop over users fails only the speed check."""

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
    "mf_biases_forgotten": Bug(
        "def _no_biases(self, user_id, item_id):\n"
        "    return (self.P(user_id) * self.Q(item_id)).sum(dim=1)\n"
        "MF.forward = _no_biases",
        {"mf", "mf_training"}),
    "mf_factors_frozen": Bug(  # the right predictions, but only the biases learn: both recipes miss (see below)
        "def _frozen_factors(self, user_id, item_id):\n"
        "    dot = (self.P(user_id).detach() * self.Q(item_id).detach()).sum(dim=1)\n"
        "    return dot + self.user_bias(user_id).squeeze(-1) + self.item_bias(item_id).squeeze(-1)\n"
        "MF.forward = _frozen_factors",
        {"mf", "mf_training"}),
    "als_unobserved_entries_counted_as_zeros": Bug(
        "def als_update(R, mask, Q, lam):\n"
        "    A = Q.T @ Q + lam * torch.eye(Q.shape[1], dtype=Q.dtype, device=Q.device)\n"
        "    return torch.linalg.solve(A, (R @ Q).T).T",
        {"als"}),
    "als_lambda_forgotten": Bug(
        "def als_update(R, mask, Q, lam):\n"
        "    W = mask.to(Q.dtype)\n"
        "    A = torch.einsum('ui,ik,il->ukl', W, Q, Q)\n"
        "    return torch.linalg.solve(A, ((W * R) @ Q).unsqueeze(-1)).squeeze(-1)",
        {"als"}),
    "als_users_without_ratings_left_nan": Bug(
        "_als_update = als_update\n"
        "def als_update(R, mask, Q, lam):\n"
        "    P = _als_update(R, mask, Q, lam)\n"
        "    return P.masked_fill(~mask.any(dim=1, keepdim=True), float('nan'))",
        {"als"}),
    "autorec_without_the_training_mask": Bug(
        "def _unmasked(self, input):\n"
        "    return self.decoder(self.dropout(torch.sigmoid(self.encoder(input))))\n"
        "AutoRec.forward = _unmasked",
        {"autorec", "autorec_training"}),
    "autorec_masked_in_eval_too": Bug(
        "def _always_masked(self, input):\n"
        "    return self.decoder(self.dropout(torch.sigmoid(self.encoder(input)))) * torch.sign(input)\n"
        "AutoRec.forward = _always_masked",
        {"autorec", "autorec_training"}),
    "bpr_naive_log_of_the_sigmoid": Bug(
        "def bpr_loss(pos_scores, neg_scores):\n"
        "    return -torch.log(torch.sigmoid(pos_scores - neg_scores)).mean()",
        {"ranking_losses"}),
    "bpr_log_instead_of_log1p": Bug(
        "def bpr_loss(pos_scores, neg_scores):\n"
        "    x = pos_scores - neg_scores\n"
        "    return (torch.clamp(-x, min=0) + torch.log(1 + torch.exp(-x.abs()))).mean()",
        {"ranking_losses"}),
    "bpr_difference_swapped": Bug(
        "def bpr_loss(pos_scores, neg_scores):\n"
        "    x = neg_scores - pos_scores\n"
        "    return (torch.clamp(-x, min=0) + torch.log1p(torch.exp(-x.abs()))).mean()",
        {"ranking_losses", "neumf_training"}),
    "hinge_margin_ignored": Bug(
        "def hinge_loss(pos_scores, neg_scores, margin=1.0):\n"
        "    return torch.clamp(1.0 - pos_scores + neg_scores, min=0).mean()",
        {"ranking_losses"}),
    "neumf_mlp_fed_the_gmf_embeddings": Bug(
        "def _gmf_fed(self, user_id, item_id):\n"
        "    gmf = self.P(user_id) * self.Q(item_id)\n"
        "    mlp = self.mlp(torch.cat([self.P(user_id), self.Q(item_id)], dim=1))\n"
        "    return torch.sigmoid(self.prediction_layer(torch.cat([gmf, mlp], dim=1))).squeeze(-1)\n"
        "NeuMF.forward = _gmf_fed",
        {"neumf", "neumf_training"}),
    "hit_at_k_off_by_one": Bug(
        "def hit_and_auc(scores, test_items, k):\n"
        "    test = scores.gather(1, test_items.view(-1, 1))\n"
        "    candidates = torch.isfinite(scores)\n"
        "    above = ((scores > test) & candidates).sum(dim=1)\n"
        "    below = ((scores < test) & candidates).sum(dim=1)\n"
        "    others = (candidates.sum(dim=1) - 1).clamp(min=1)\n"
        "    return float((above <= k).double().mean()), float((below / others).double().mean())",
        {"hit_and_auc"}),
    "auc_counts_the_test_item_below_itself": Bug(
        "def hit_and_auc(scores, test_items, k):\n"
        "    test = scores.gather(1, test_items.view(-1, 1))\n"
        "    candidates = torch.isfinite(scores)\n"
        "    above = ((scores > test) & candidates).sum(dim=1)\n"
        "    below = ((scores <= test) & candidates).sum(dim=1)\n"
        "    others = (candidates.sum(dim=1) - 1).clamp(min=1)\n"
        "    return float((above < k).double().mean()), float((below / others).double().mean())",
        {"hit_and_auc"}),
}

#: Shortcuts: right answers through what the ranking-loss rule forbids; each must cost exactly `voids`.
SHORTCUTS = {
    "bpr_through_f_logsigmoid_behind_an_alias": Shortcut(
        "from torch.nn.functional import logsigmoid as ls\n"
        "def _log_prob(x):\n"
        "    return ls(x)\n"
        "def bpr_loss(pos_scores, neg_scores):\n"
        "    return -_log_prob(pos_scores - neg_scores).mean()",
        "`F.logsigmoid`", {"ranking_losses", "neumf_training"}),
    "bpr_through_binary_cross_entropy_with_logits": Shortcut(
        "def bpr_loss(pos_scores, neg_scores):\n"
        "    x = pos_scores - neg_scores\n"
        "    return F.binary_cross_entropy_with_logits(x, torch.ones_like(x))",
        "`F.logsigmoid`", {"ranking_losses", "neumf_training"}),
    "hinge_through_f_margin_ranking_loss": Shortcut(
        "def hinge_loss(pos_scores, neg_scores, margin=1.0):\n"
        "    return F.margin_ranking_loss(pos_scores, neg_scores, torch.ones_like(pos_scores), margin=margin)",
        "`F.logsigmoid`", {"ranking_losses"}),
    "recording_switched_off_anywhere": Shortcut(
        "import sys\nloaded = sorted(sys.modules)", "", {"ranking_losses", "neumf_training"}),
}

#: Correct solutions in other styles: each keeps full marks.
ALTERNATIVES = {
    "cholesky_als_and_logaddexp_bpr": (
        "def als_update(R, mask, Q, lam):\n"
        "    W = mask.to(Q.dtype)\n"
        "    A = (W[:, :, None, None] * (Q[:, :, None] * Q[:, None, :])[None]).sum(dim=1)\n"
        "    A = A + lam * torch.eye(Q.shape[1], dtype=Q.dtype, device=Q.device)\n"
        "    b = (R.masked_fill(~mask, 0).to(Q.dtype) @ Q).unsqueeze(-1)\n"
        "    return torch.cholesky_solve(b, torch.linalg.cholesky(A)).squeeze(-1)\n"
        "def bpr_loss(pos_scores, neg_scores):\n"
        "    x = pos_scores - neg_scores\n"
        "    return torch.logaddexp(torch.zeros_like(x), -x).mean()\n"
        "def hinge_loss(pos_scores, neg_scores, margin=1.0):\n"
        "    return torch.relu(margin - (pos_scores - neg_scores)).mean()"),
    "modulelist_neumf_and_einsum_mf": (
        "class NeuMF(nn.Module):\n"
        "    def __init__(self, num_factors, num_users, num_items, nums_hiddens):\n"
        "        super().__init__()\n"
        "        self.P, self.Q = nn.Embedding(num_users, num_factors), nn.Embedding(num_items, num_factors)\n"
        "        self.U, self.V = nn.Embedding(num_users, num_factors), nn.Embedding(num_items, num_factors)\n"
        "        self.mlp = nn.ModuleList()\n"
        "        sizes = [2 * num_factors] + list(nums_hiddens)\n"
        "        for d_in, d_out in zip(sizes[:-1], sizes[1:]):\n"
        "            self.mlp.append(nn.Linear(d_in, d_out))\n"
        "            self.mlp.append(nn.ReLU())\n"
        "        self.prediction_layer = nn.Linear(num_factors + sizes[-1], 1, bias=False)\n"
        "    def forward(self, user_id, item_id):\n"
        "        h = torch.cat((self.U(user_id), self.V(item_id)), dim=-1)\n"
        "        for layer in self.mlp:\n"
        "            h = layer(h)\n"
        "        z = torch.cat((self.P(user_id) * self.Q(item_id), h), dim=-1)\n"
        "        return torch.sigmoid(self.prediction_layer(z)).squeeze(1)\n"
        "def _einsum_forward(self, user_id, item_id):\n"
        "    dot = torch.einsum('bk,bk->b', self.P(user_id), self.Q(item_id))\n"
        "    return dot + self.user_bias(user_id).view(-1) + self.item_bias(item_id).view(-1)\n"
        "MF.forward = _einsum_forward"),
    "argsort_ranks_returning_tensors": (
        "def hit_and_auc(scores, test_items, k):\n"
        "    order = torch.argsort(scores, dim=1, descending=True)\n"
        "    rank = (order == test_items[:, None]).nonzero()[:, 1]\n"
        "    n_other = torch.isfinite(scores).sum(dim=1) - 1\n"
        "    auc = (n_other - rank).clamp(min=0).double() / n_other.clamp(min=1).double()\n"
        "    return (rank < k).double().mean(), auc.mean()"),
}

#: A correct ALS that loops over the users: right values, only the speed check fails.
LOOP = (
    "def als_update(R, mask, Q, lam):\n"
    "    P = torch.zeros(R.shape[0], Q.shape[1], dtype=Q.dtype, device=Q.device)\n"
    "    eye = torch.eye(Q.shape[1], dtype=Q.dtype, device=Q.device)\n"
    "    for u in range(R.shape[0]):\n"
    "        Q_u = Q[mask[u]]\n"
    "        P[u] = torch.linalg.solve(Q_u.T @ Q_u + lam * eye, Q_u.T @ R[u, mask[u]].to(Q.dtype))\n"
    "    return P"
)
SPEED_CHECK = "test_als_update_is_vectorised"


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    root = tmp_path_factory.mktemp("u4")
    course = copy_course(root / "course", source=REPO, assignments=("u4_recsys",))
    for folder in ("release", "solutions"):
        shutil.copytree(REPO / folder / "u4_recsys", course.root / folder / "u4_recsys")
    subs = root / "subs"
    subs.mkdir()
    solution = REPO / "solutions" / "u4_recsys" / "u4_recsys.ipynb"
    shutil.copy(solution, subs / "solution.ipynb")
    shutil.copy(REPO / "release" / "u4_recsys" / "u4_recsys.ipynb", subs / "release.ipynb")
    for name, bug in BUGS.items():
        write(with_cells(solution, bug.code), subs / f"{name}.ipynb")
    for name, shortcut in SHORTCUTS.items():
        write(with_cells(solution, shortcut.code), subs / f"shortcut_{name}.ipynb")
    for name, code in ALTERNATIVES.items():
        write(with_cells(solution, code), subs / f"alternative_{name}.ipynb")
    write(with_cells(solution, LOOP), subs / "loop_over_users.ipynb")
    for example in ("correct", "partial", "broken", "empty"):
        shutil.copy(REPO / "examples" / "u4_recsys" / f"{example}.ipynb", subs / f"example_{example}.ipynb")
    return grade(course, "u4_recsys", [subs], root / "out", workers=2, call_seconds=3)


def cells_losing_points(result: dict) -> set[str]:
    return {g for g, c in result["extra_data"]["grade_cells"].items() if c["score"] < c["max_score"]}


def test_the_solution_earns_every_point(results):
    """Does the solution notebook score max_score (50), with every check and both by-hand rules passing?"""
    assert results["solution"]["score"] == results["solution"]["max_score"] == 50
    assert failing_checks(results["solution"]) == set()


def test_the_release_earns_nothing(results):
    """Does the untouched release score 0, each check saying what is not implemented yet?"""
    assert results["release"]["score"] == 0
    assert checks_of(results["release"]) and all("todavía no está implementad" in t["output"] for t in checks_of(results["release"]))


@pytest.mark.parametrize("name", BUGS)
def test_each_planted_bug_loses_exactly_the_parts_that_catch_it(results, name):
    """Does the bug cost points in the parts that should catch it (and the trainings built on the buggy piece),
    and nowhere else?"""
    assert cells_losing_points(results[name]) == BUGS[name].loses


#: Planted bugs whose module computes the reference's predictions in eval mode, so their training check trains it:
#: the check, and the epochs its message reports (the full recipe's, once the quick one missed too).
TRAINED_BUGS = {
    "mf_factors_frozen": ("test_mf_training_reaches_noise_level", "Tras 10 épocas"),
    "autorec_without_the_training_mask": ("test_autorec_training_reaches_rmse", "Tras 60 épocas"),
}


@pytest.mark.parametrize("name", TRAINED_BUGS)
def test_a_bug_that_trains_misses_its_training_target_in_both_recipes(results, name):
    """Does a planted bug whose forward pass is right fail its training check on the target itself, after the
    quick recipe and then the full one missed it (the message reports the full recipe's checkpoints)?"""
    check, epochs = TRAINED_BUGS[name]
    entry = next(t for t in results[name]["tests"] if t["extra_data"]["check"] == check)
    assert entry["status"] != "passed"
    assert epochs in entry["output"] and "se esperaba como mucho" in entry["output"], entry["output"]


@pytest.mark.parametrize("name", SHORTCUTS)
def test_each_shortcut_loses_its_whole_part(results, name):
    """Does a right answer through a forbidden loss (or with the recording switched off) cost exactly its parts,
    with the rule saying why, while every case still computed the right values?"""
    expect_shortcut_voids(results[f"shortcut_{name}"], SHORTCUTS[name])


@pytest.mark.parametrize("name", ALTERNATIVES)
def test_correct_styles_keep_full_marks(results, name):
    """Do Cholesky ALS with broadcast products, a logaddexp BPR with a ReLU hinge, a ModuleList NeuMF with an
    einsum MF, and an argsort ranking that returns 0-dim tensors keep every point?"""
    assert results[f"alternative_{name}"]["score"] == 50, failing_checks(results[f"alternative_{name}"])


def test_an_als_loop_over_users_fails_only_its_speed_check_by_a_wide_margin(results):
    """Is a correct ALS that loops over the users penalised only by its speed check, missing the limit by a wide
    margin?"""
    result = results["loop_over_users"]
    assert failing_checks(result) == {SPEED_CHECK}
    timing = next(t for t in result["tests"] if t["extra_data"]["check"] == SPEED_CHECK)
    case = timing["extra_data"]["cases"][0]
    assert case["properties"]["ratio"] > 2 * case["properties"]["max_ratio"]


def test_the_bundled_examples_score_as_documented(results):
    """Do the examples that `make demo` grades get the scores README states?"""
    expected = json.loads((REPO / "examples" / "u4_recsys" / "expected.json").read_text())
    assert {name: results[f"example_{name}"]["score"] for name in expected} == expected


def test_the_solution_passes_its_public_checks_in_a_kernel_with_only_the_released_files(tmp_path):
    """Run as a student would (a Jupyter kernel in the downloaded folder), do all public checks pass, the two
    parts with a rule showing it kept?"""
    workdir = tmp_path / "student"
    shutil.copytree(REPO / "solutions" / "u4_recsys", workdir, ignore=shutil.ignore_patterns("__pycache__"))
    nb = nbformat.read(workdir / "u4_recsys.ipynb", as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", allow_errors=True,
                   resources={"metadata": {"path": str(workdir)}}).execute()
    assert not [o for cell in nb.cells for o in cell.get("outputs", []) if o.output_type == "error"]
    checks = ["".join(o.get("text", "") or o.get("data", {}).get("text/markdown", "") for o in cell.get("outputs", []))
              for cell in nb.cells if cell.metadata.get("nbgrader", {}).get("grade")]
    assert len(checks) == 9
    for text in checks:
        assert "Comprobaciones públicas de" in text and "✘" not in text, text
    assert sum(text.count("✔ Regla") for text in checks) == 2
