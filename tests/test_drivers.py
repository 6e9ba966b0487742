"""The engine's training drivers, run in this process (in grading they run in the worker, next to the student's
code)."""

import pytest
import torch
from torch import nn

from autograder.drivers import BPRTrainer, fused_adam, make_bpr_trainer, make_rating_trainer, make_trainer, train_steps


def trained(calls: list[tuple[int, int | None]]) -> tuple[list[float], torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    generator = torch.Generator().manual_seed(1)
    x, y = torch.randn(64, 4, generator=generator), torch.randint(0, 3, (64,), generator=generator)
    trainer = make_trainer(model, x, y, "adam", 1e-2)
    losses = [loss for count, seed in calls for loss in train_steps(trainer, count, 8, seed)]
    return losses, model[0].weight.detach().clone()


def test_a_chunk_split_in_several_calls_trains_as_one_call():
    """Does a chunk of steps seeded once and run in several calls (the later ones with seed None) draw the same
    minibatches, and so end with the same losses and weights, as the chunk run in one call; and does a new seed
    start other minibatches?"""
    one_losses, one_weights = trained([(20, 7), (20, 9)])
    split_losses, split_weights = trained([(5, 7), (5, None), (10, None), (5, 9), (15, None)])
    assert split_losses == one_losses and torch.equal(split_weights, one_weights)
    other_losses, _ = trained([(20, 7), (20, 10)])
    assert other_losses[:20] == one_losses[:20] and other_losses[20:] != one_losses[20:]


def test_the_recommender_trainers_adam_steps_like_the_for_loop_adam(monkeypatch):
    """Does the recommender trainers' fused Adam take the for-loop Adam's steps (the same update, to float32
    rounding), and does a torch without a fused kernel for the tensors get the for-loop one instead?"""
    torch.manual_seed(0)
    start = [torch.randn(50, 8), torch.randn(8)]
    targets = torch.randn(50, 8)

    def trained(optimizer_for) -> list[torch.Tensor]:
        parameters = [nn.Parameter(t.clone()) for t in start]
        optimizer = optimizer_for(parameters)
        for _ in range(30):
            loss = ((parameters[0] + parameters[1] - targets) ** 2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return parameters

    fused = trained(lambda p: fused_adam(p, lr=0.01, weight_decay=1e-5))
    plain = trained(lambda p: torch.optim.Adam(p, lr=0.01, weight_decay=1e-5))
    for got, expected in zip(fused, plain):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    assert not torch.equal(fused[0], start[0])
    if tuple(int(part) for part in torch.__version__.split(".")[:2]) >= (2, 4):  # CPU fused kernels since 2.4
        assert fused_adam([nn.Parameter(torch.zeros(3))], lr=0.1).defaults["fused"]
        trainer = make_rating_trainer(nn.Embedding(4, 2), torch.tensor([0, 1]), torch.tensor([0, 1]),
                                      torch.tensor([1.0, 2.0]), init_std=0.1, lr=0.01, weight_decay=0.0,
                                      batch_size=2, seed=0)
        assert trainer.optimizer.defaults["fused"]

    class NoFusedKernel(torch.optim.Adam):
        def __init__(self, parameters, fused=None, **settings):
            if fused:
                raise RuntimeError("`fused=True` requires all the params to be floating point Tensors of "
                                   "supported devices")
            super().__init__(parameters, **settings)

    monkeypatch.setattr(torch.optim, "Adam", NoFusedKernel)
    assert not fused_adam([nn.Parameter(torch.zeros(3))], lr=0.1).defaults.get("fused")


#: The chi-square distribution's 0.999 quantile, by degrees of freedom.
CHI2_999 = {1: 10.83, 4: 18.47, 8: 26.12}


def bpr_trainer(users: list[int], items: list[int], num_users: int, num_items: int, seed: int = 0) -> BPRTrainer:
    model = nn.Embedding(max(num_users, num_items), 2)  # never called: only the negatives are drawn here
    return make_bpr_trainer(model, lambda pos, neg: (neg - pos).mean(), torch.tensor(users), torch.tensor(items),
                            num_users, num_items, init_std=0.1, lr=0.01, weight_decay=0.0, batch_size=4, seed=seed)


def test_bpr_negatives_are_uniform_among_each_users_unseen_items():
    """Is every negative an item its user never interacted with, each of those equally likely (a chi-square test
    over 60 000 draws, for a user who saw most items and one who saw few), the same draws for the same seed and
    others for another; and is a user who saw every item refused?"""
    seen = {0: [0, 1, 2, 3, 4, 5, 7, 8], 1: [9], 2: [0, 2, 4, 6, 8]}  # of 10 items: 0 has 2 left, 1 has 9
    users = [u for u, items in seen.items() for _ in items]
    items = [i for items in seen.values() for i in items]
    trainer = bpr_trainer(users, items, 3, 10)
    asked = torch.tensor([0, 1, 2]).repeat(20_000)                                  # (60 000,)
    drawn = trainer.negatives(asked)
    for user, items_seen in seen.items():
        got = drawn[asked == user]
        unseen = sorted(set(range(10)) - set(items_seen))
        assert sorted(got.unique().tolist()) == unseen
        counts = torch.bincount(got, minlength=10)[unseen].double()
        expected = len(got) / len(unseen)
        chi2 = float(((counts - expected) ** 2 / expected).sum())
        assert chi2 < CHI2_999[len(unseen) - 1], (user, counts.tolist())
    assert torch.equal(bpr_trainer(users, items, 3, 10).negatives(asked), drawn)
    assert not torch.equal(bpr_trainer(users, items, 3, 10, seed=1).negatives(asked), drawn)
    with pytest.raises(ValueError, match="item left"):
        bpr_trainer([0, 0, 1], [0, 1, 0], 2, 2)
