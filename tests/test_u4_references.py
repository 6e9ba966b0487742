"""Unit 4's reference computations: shortcuts the checks take are exact, and a quick training recipe can only
pass early, never fail in the full recipe's place."""

import pytest
import torch

from autograder.checks.u4_recsys.common import (
    AUTOREC_QUICK, AUTOREC_TRAINING, ReferenceNeuMF, Training, neumf_logit_matrix, quick_then_full,
    reference_neumf_logits,
)
from autograder.errors import CheckFailure, WorkerTimeout


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
