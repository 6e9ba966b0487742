"""Unit 4's reference computations: shortcuts the checks take are exact, a quick training recipe can only pass
early, never fail in the full recipe's place, a training stops early only once it has passed (early checkpoints
included), a module whose forward pass is wrong fails before it trains, and the notebook states the quick recipes
the checks use."""

import json

import pytest
import torch
from torch import nn

from autograder.checks.u4_recsys import common
from autograder.checks.u4_recsys.common import (
    AUTOREC_QUICK, AUTOREC_TRAINING, ReferenceNeuMF, Training, autorec_rmse, checkpoint_epochs, neumf_logit_matrix,
    quick_then_full, reference_autorec, reference_neumf_logits, train_and_measure,
)
from autograder.checklib.ratings import Ratings
from autograder.errors import CheckFailure, WorkerTimeout
from autograder.remote import Client, LocalTransport, StudentNamespace
from conftest import REPO


def test_the_neumf_logit_matrix_by_parts_equals_every_pair_scored_alone():
    """Do the (U, I) logits computed by parts (the GMF half as a matrix product, the first MLP layer as a user and
    an item term) equal `reference_neumf_logits` on every (user, item) pair, for one, three and four hidden
    layers and more users than one block?"""
    U, I, k = 300, 40, 5
    for hiddens in ((6,), (8, 4, 3), (5, 7, 2, 3)):
        torch.manual_seed(len(hiddens))
        model = ReferenceNeuMF(k, U, I, hiddens).double()
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.normal_(0.0, 0.7)
        params = {name: p.detach() for name, p in model.named_parameters()}
        pairwise = reference_neumf_logits(params, model.layers, torch.arange(U).repeat_interleave(I),
                                          torch.arange(I).repeat(U)).view(U, I)
        torch.testing.assert_close(neumf_logit_matrix(params, model.layers, U, I), pairwise, rtol=1e-12, atol=1e-12)


QUICK, FULL = AUTOREC_QUICK, AUTOREC_TRAINING


def scripted(outcomes: dict):
    """A `run(recipe)` that returns (or raises) what `outcomes` says for each recipe, and records the calls."""
    calls: list[Training] = []

    def run(recipe: Training):
        calls.append(recipe)
        outcome = outcomes[recipe]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome
    return run, calls


def test_a_quick_training_that_passes_is_the_only_one():
    """Does a quick training that passes decide, without the full recipe running?"""
    run, calls = scripted({QUICK: 0.70, FULL: 0.80})
    assert quick_then_full(run, lambda rmse: rmse <= 0.75, quick=QUICK, full=FULL) == 0.70
    assert calls == [QUICK]


@pytest.mark.parametrize("quick", [0.76, CheckFailure("La pérdida se volvió NaN.")], ids=["misses", "non-finite"])
def test_a_quick_training_that_misses_or_fails_hands_over_to_the_full_one(quick):
    """Does a quick training that misses the threshold (or raises a check failure, say a non-finite loss) run the
    full recipe, whose result stands, pass or miss?"""
    for full in (0.74, 0.78):
        run, calls = scripted({QUICK: quick, FULL: full})
        assert quick_then_full(run, lambda rmse: rmse <= 0.75, quick=QUICK, full=FULL) == full
        assert calls == [QUICK, FULL]


def test_the_full_recipes_failure_stands_and_a_hang_stops_at_once():
    """Does a check failure of the full recipe reach the check, and does the student's code running out of time
    in the quick training stop there (no recipe makes a hang pass)?"""
    run, calls = scripted({QUICK: 0.80, FULL: CheckFailure("forward distinto")})
    with pytest.raises(CheckFailure, match="forward distinto"):
        quick_then_full(run, lambda rmse: rmse <= 0.75, quick=QUICK, full=FULL)
    run, calls = scripted({QUICK: WorkerTimeout("se pasó del tiempo"), FULL: 0.70})
    with pytest.raises(WorkerTimeout):
        quick_then_full(run, lambda rmse: rmse <= 0.75, quick=QUICK, full=FULL)
    assert calls == [QUICK]


RECIPE = Training(init_std=0.01, lr=0.01, weight_decay=0.0, batch_size=100, epochs=6)  # 3 steps of 100 per epoch


def measured_run(monkeypatch, values: list[float], *, reached=lambda found: min(found) <= 0.75, chunk: int = 2):
    """`train_and_measure` over 300 examples with 3 checkpoints, the worker's steps recorded instead of run; the
    checkpoints measure `values` in turn. Returns its result and the step count of each call."""
    calls: list[int] = []
    monkeypatch.setattr(common, "train_steps", lambda student, trainer, count, *, names: calls.append(count))
    measured = iter(values)

    def measure():
        return next(measured), {"after steps": sum(calls)}
    found = train_and_measure(None, None, RECIPE, examples=300, checkpoints=3, names="`AutoRec`", measure=measure,
                              reached=reached, chunk=chunk)
    return found, calls


def test_a_training_stops_at_the_first_checkpoint_that_reaches_the_target(monkeypatch):
    """Does a training whose second checkpoint (epoch 5 of 6) reaches the target stop there, every epoch before
    it trained in full (calls of at most `chunk` steps), and return both measurements with that epoch's weights?"""
    (values, params), calls = measured_run(monkeypatch, [0.78, 0.74, 0.70])
    assert values == [0.78, 0.74]
    assert calls == [2, 1] * 5
    assert params == {"after steps": 15}


def test_a_training_that_never_reaches_the_target_runs_every_epoch(monkeypatch):
    """Does a training that misses at every checkpoint train all its epochs and measure all the last three, so
    a failure message can show them?"""
    (values, params), calls = measured_run(monkeypatch, [0.80, 0.79, 0.77])
    assert values == [0.80, 0.79, 0.77]
    assert sum(calls) == 18 and params == {"after steps": 18}


def test_a_recipes_early_checkpoints_are_measured_and_can_stop_the_training(monkeypatch):
    """With early checkpoints after epochs 1 and 2 of 6 (3 steps each), is the training measured after epochs 1, 2,
    4, 5 and 6 when it never reaches the target, and does it stop after epoch 2 when that checkpoint reaches it?"""
    recipe = Training(init_std=0.01, lr=0.01, weight_decay=0.0, batch_size=100, epochs=6, early_checkpoints=(1, 2))
    calls: list[int] = []
    monkeypatch.setattr(common, "train_steps", lambda student, trainer, count, *, names: calls.append(count))

    def measure():  # the value is the number of steps taken so far
        return sum(calls), {}

    def run(target_steps: int) -> list[int]:
        calls.clear()
        values, _ = train_and_measure(None, None, recipe, examples=300, checkpoints=3, names="`AutoRec`",
                                      measure=measure, reached=lambda found: found[-1] == target_steps)
        return values
    assert run(target_steps=-1) == [3, 6, 12, 15, 18]
    assert run(target_steps=6) == [3, 6] and sum(calls) == 6


@pytest.mark.parametrize("early", [(0,), (4,), (7,)])
def test_early_checkpoints_outside_the_epochs_before_the_last_ones_are_refused(early):
    """Is an early checkpoint at epoch 0, among the last three of six, or past the end a mistake in the recipe?"""
    recipe = Training(init_std=0.01, lr=0.01, weight_decay=0.0, batch_size=100, epochs=6, early_checkpoints=early)
    with pytest.raises(ValueError, match="early checkpoints"):
        checkpoint_epochs(recipe, 3)


def test_early_checkpoints_from_the_first_epoch_to_the_last_before_the_last_ones_are_measured():
    """Are early checkpoints at epochs 1 and 3 of six (the first and the last before the last three) measured, with
    the last three?"""
    recipe = Training(init_std=0.01, lr=0.01, weight_decay=0.0, batch_size=100, epochs=6, early_checkpoints=(1, 3))
    assert checkpoint_epochs(recipe, 3) == {1, 3, 4, 5, 6}


def test_the_checks_recipes_measure_where_their_messages_say():
    """Are the checks' own recipes valid, and do the full ones (whose checkpoints a failing check reports as 'the
    last N epochs') measure only their last epochs, early checkpoints being the quick recipes' alone?"""
    for quick, full, last in ((common.MF_QUICK, common.MF_TRAINING, common.MF_CHECKPOINTS),
                              (AUTOREC_QUICK, AUTOREC_TRAINING, common.AUTOREC_CHECKPOINTS),
                              (common.NEUMF_QUICK, common.NEUMF_TRAINING, common.NEUMF_CHECKPOINTS)):
        checkpoint_epochs(quick, last)
        assert checkpoint_epochs(full, last) == set(range(full.epochs - last + 1, full.epochs + 1))


def test_the_autorec_rmse_at_the_test_entries_equals_the_full_reconstruction_read_there():
    """Does `autorec_rmse`, which evaluates the decoder only at the held-out entries, equal the RMSE of the full
    eval-mode reconstruction (`reference_autorec`) read at those entries?"""
    torch.manual_seed(3)
    I, U, h, n = 30, 20, 7, 50
    rows = torch.randint(0, 6, (I, U)).float()                                            # (I, U), 0 = missing
    shapes = {"encoder.weight": (h, U), "encoder.bias": (h,), "decoder.weight": (U, h), "decoder.bias": (U,)}
    params = {name: torch.randn(shape, dtype=torch.float64) for name, shape in shapes.items()}
    test = Ratings(user=torch.randint(0, U, (n,)), item=torch.randint(0, I, (n,)),
                   rating=torch.randint(1, 6, (n,)).float(), timestamp=torch.arange(n), num_users=U, num_items=I)
    full = reference_autorec(params, rows.double(), training=False)[test.item, test.user]   # (N,)
    expected = float(((full - test.rating.double()) ** 2).mean().sqrt())
    assert autorec_rmse(params, rows, test) == pytest.approx(expected, rel=1e-12)


def test_stopping_early_sees_every_value_so_far(monkeypatch):
    """Is `reached` given every checkpoint's value so far (a check over the best of several, as NeuMF's Hit@10 and
    AUC are, can be met by two different epochs)?"""
    seen = []

    def reached(found):
        seen.append(list(found))
        return max(h for h, _ in found) >= 0.2 and max(a for _, a in found) >= 0.85

    (values, _), _ = measured_run(monkeypatch, [(0.21, 0.80), (0.15, 0.86), (0.3, 0.9)], reached=reached)
    assert values == [(0.21, 0.80), (0.15, 0.86)]
    assert seen == [[(0.21, 0.80)], [(0.21, 0.80), (0.15, 0.86)]]


class AutoRec(nn.Module):
    """The notebook's `AutoRec`; `mask_in_eval` plants a common bug (the output masked by sign(input) in eval mode
    too, so the missing ratings are never predicted)."""

    mask_in_eval = False

    def __init__(self, num_hidden: int, num_users: int, dropout: float = 0.05) -> None:
        super().__init__()
        self.encoder, self.decoder = nn.Linear(num_users, num_hidden), nn.Linear(num_hidden, num_users)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:                                   # (B, U) -> (B, U)
        output = self.decoder(self.dropout(torch.sigmoid(self.encoder(x))))
        return output * torch.sign(x) if self.training or self.mask_in_eval else output


class MaskedInEval(AutoRec):
    mask_in_eval = True


def test_a_wrong_forward_pass_fails_before_any_training_step(monkeypatch):
    """Does an `AutoRec` that masks its output in eval mode fail its training check on random weights, before any
    trainer is made, while a correct one passes that check and goes on to train?"""
    trainings: list[str] = []

    def no_training(*args, measure, **kwargs):  # the weights as the trainer drew them, measured once
        trainings.append("trained")
        value, params = measure()
        return [value], params

    monkeypatch.setattr(common, "train_and_measure", no_training)
    buggy = StudentNamespace(Client(LocalTransport({"AutoRec": MaskedInEval})))
    with pytest.raises(CheckFailure, match="con unos pesos al azar, antes de entrenar"):
        common.train_autorec(buggy, torch.Generator().manual_seed(0), "cpu")
    assert trainings == []
    correct = StudentNamespace(Client(LocalTransport({"AutoRec": AutoRec})))
    rmses = common.train_autorec(correct, torch.Generator().manual_seed(0), "cpu")
    assert trainings == ["trained", "trained"] and len(rmses) == 1  # untrained, it misses: quick, then full


class SwappedNeuMF(nn.Module):
    """d2l's `NeuMF` with the MLP's output before GMF's in the prediction layer's input: with 10 factors and a last
    hidden layer of 10 the shapes still fit, and with the trainer's small initial weights (N(0, 0.01)) every
    output is within 1e-4 of sigmoid(0); only weights of order one show the difference."""

    def __init__(self, num_factors: int, num_users: int, num_items: int, nums_hiddens: list[int]) -> None:
        super().__init__()
        self.P, self.Q = nn.Embedding(num_users, num_factors), nn.Embedding(num_items, num_factors)
        self.U, self.V = nn.Embedding(num_users, num_factors), nn.Embedding(num_items, num_factors)
        layers, fan_in = [], 2 * num_factors
        for width in nums_hiddens:
            layers += [nn.Linear(fan_in, width), nn.ReLU()]
            fan_in = width
        self.mlp = nn.Sequential(*layers)
        self.prediction_layer = nn.Linear(num_factors + fan_in, 1, bias=False)

    def forward(self, user_id: torch.Tensor, item_id: torch.Tensor) -> torch.Tensor:          # (B,), (B,) -> (B,)
        gmf = self.P(user_id) * self.Q(item_id)                                               # (B, k)
        mlp = self.mlp(torch.cat([self.U(user_id), self.V(item_id)], dim=1))                  # (B, h)
        return torch.sigmoid(self.prediction_layer(torch.cat([mlp, gmf], dim=1)))[:, 0]


def test_a_neumf_with_a_wrong_forward_pass_fails_before_its_trainer_is_made(monkeypatch):
    """Does a `NeuMF` whose forward pass differs from the reference's only at the logit level fail its training
    check on random weights of order one, before any trainer is made (its first watched steps included)?"""
    trainers: list[object] = []
    monkeypatch.setattr(common, "make_bpr_trainer", lambda *args, **kwargs: trainers.append(args))
    student = StudentNamespace(Client(LocalTransport({"NeuMF": SwappedNeuMF})))
    with pytest.raises(CheckFailure, match="con unos pesos al azar, antes de entrenar"):
        common.train_neumf(student, torch.Generator().manual_seed(0), "cpu")
    assert trainers == []


def test_the_notebook_states_the_quick_recipes_the_checks_use():
    """Does part 2's, part 5's and part 9's text give the quick recipes' rates, epochs, batches and AutoRec's early
    checkpoints as the checks define them?"""
    notebook = json.loads((REPO / "source" / "u4_recsys" / "u4_recsys.ipynb").read_text(encoding="utf-8"))
    text = " ".join(" ".join("".join(cell["source"]).split()) for cell in notebook["cells"]
                    if cell["cell_type"] == "markdown")
    mf, autorec, neumf = common.MF_QUICK, AUTOREC_QUICK, common.NEUMF_QUICK
    *first, last = autorec.early_checkpoints
    assert f"una receta más corta (tasa {mf.lr:g} y {mf.epochs} épocas)" in text
    assert (f"una receta más corta (tasa {autorec.lr:g} y {autorec.epochs} épocas, midiendo también después de las "
            f"épocas {', '.join(map(str, first))} y {last})") in text
    assert f"una receta más corta (minilotes de {neumf.batch_size} y tasa {neumf.lr:g}" in text
