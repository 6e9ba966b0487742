"""How much room Unit 4's training checks leave the solution, for the recipe in the checks or a shorter one.

Each training check (MF, AutoRec, NeuMF) trains the student's module with the engine's own
trainer (`autograder.drivers`) and compares what the reference measures on held-out data
with a threshold. Every correct module computes the reference's function, and the trainer
re-initialises every weight by name, so a reference module trained here follows the path a
correct submission follows: its margin over the threshold, across seeds, is how close a
correct class comes to a false failure (all of a batch's submissions share one seed).
Before shortening a recipe to save grading time, run this over many seeds, and grade the
unit's planted bugs (`tests/test_u4_recsys.py`) with it: they must still fail. Prints, per
recipe: the margin's minimum, median and maximum, the mean seconds of training and of the
reference's measurements (every epoch is trained and every checkpoint measured), the epochs after
which the check would stop (its first checkpoint that reaches the threshold), and for NeuMF by how
much it beat popularity in Hit@10 and in AUC.
One thread, in this process. Usage:

    .venv/bin/python bench/training_margins.py [--check neumf] [--quick] [--seeds 20] [--first-seed 0]
        [--batch-size 1024 --lr 0.01 --epochs 5] [--early-checkpoints 16,20]
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass, field, replace

import torch
from torch import nn

from autograder import drivers
from autograder.checklib.ratings import ML100K_ITEMS, ML100K_USERS, rating_matrix
from autograder.checks.u4_recsys import common as u4


class AutoRecWithDropout(nn.Module):
    """The solution's `AutoRec` as the check builds it (dropout 0.05 on the hidden layer)."""

    def __init__(self, hidden: int, users: int, dropout: float) -> None:
        super().__init__()
        self.encoder, self.decoder = nn.Linear(users, hidden), nn.Linear(hidden, users)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:                                   # (B, U) -> (B, U)
        output = self.decoder(self.dropout(torch.sigmoid(self.encoder(x))))
        return output * torch.sign(x) if self.training else output


@dataclass
class Run:
    margin: float  # how far inside the threshold the solution ended (negative: the check would fail it)
    train_seconds: float
    measure_seconds: float
    stop_epoch: int  # the checkpoint where the check stops (the last epoch when it never reaches the threshold)
    beats: dict[str, float] = field(default_factory=dict)  # NeuMF: by how much it beat popularity, per measure


def weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().double() for name, p in model.named_parameters()}


def epochs(trainer, recipe: u4.Training, examples: int, checkpoints: int, measure,
           reached) -> tuple[list, int, float, float]:
    """Train all `recipe.epochs` epochs; `measure()` after each checkpoint (`u4.checkpoint_epochs`: the last
    `checkpoints` and the recipe's early ones). Returns the measurements, the checkpoint where the check would stop
    (the first where `reached(measurements so far)`; the last epoch if none), and the seconds spent training and
    measuring."""
    steps = recipe.steps_per_epoch(examples)
    measured = u4.checkpoint_epochs(recipe, checkpoints)
    found, stop, train_seconds, measure_seconds = [], recipe.epochs, 0.0, 0.0
    for epoch in range(1, recipe.epochs + 1):
        started = time.perf_counter()
        trainer.steps(steps)
        train_seconds += time.perf_counter() - started
        if epoch in measured:
            started = time.perf_counter()
            found.append(measure())
            measure_seconds += time.perf_counter() - started
            if stop == recipe.epochs and reached(found):
                stop = epoch
    return found, stop, train_seconds, measure_seconds


def mf(rng: torch.Generator, recipe: u4.Training) -> Run:
    train, test = u4.rating_data(rng)
    model = u4.ReferenceMF(u4.MF_FACTORS, ML100K_USERS, ML100K_ITEMS)
    trainer = drivers.make_rating_trainer(model, train.user, train.item, train.rating,
                                          **recipe.settings(int(torch.randint(0, 2**31, (1,), generator=rng))))
    noise = test.noise_rmse()
    rmses, stop, t, m = epochs(trainer, recipe, len(train), u4.MF_CHECKPOINTS,
                               lambda: u4.mf_rmse(weights(model), test), lambda found: u4.mf_reached(found, noise))
    return Run(noise + u4.MF_MARGIN - min(rmses), t, m, stop)


def autorec(rng: torch.Generator, recipe: u4.Training) -> Run:
    train, test = u4.rating_data(rng)
    rows = rating_matrix(train)[0].T.contiguous()                                        # (I, U)
    model = AutoRecWithDropout(u4.AUTOREC_HIDDEN, ML100K_USERS, 0.05)
    trainer = drivers.make_autorec_trainer(model, rows, **recipe.settings(int(torch.randint(0, 2**31, (1,),
                                                                                            generator=rng))))
    rmses, stop, t, m = epochs(trainer, recipe, len(rows), u4.AUTOREC_CHECKPOINTS,
                               lambda: u4.autorec_rmse(weights(model), rows, test), u4.autorec_reached)
    return Run(u4.AUTOREC_TARGET - min(rmses), t, m, stop)


def neumf(rng: torch.Generator, recipe: u4.Training) -> Run:
    """The smaller of the two margins (Hit@10 and AUC over the popularity baseline, each past its own), and by how
    much the best checkpoint beat the baseline in each."""
    data = u4.implicit_data(rng)
    model = u4.ReferenceNeuMF(u4.NEUMF_FACTORS, ML100K_USERS, ML100K_ITEMS, u4.NEUMF_HIDDENS)
    trainer = drivers.make_bpr_trainer(model, u4.reference_bpr, data.train_user, data.train_item, data.num_users,
                                       data.num_items,
                                       **recipe.settings(int(torch.randint(0, 2**31, (1,), generator=rng))))

    def measure() -> tuple[float, float]:
        scores = u4.neumf_logit_matrix(weights(model), model.layers, ML100K_USERS, ML100K_ITEMS)
        return u4.reference_hit_and_auc(u4.ranking_scores(scores, data), data.test_item, u4.NEUMF_K)

    baseline = u4.popularity_baseline(data)
    results, stop, t, m = epochs(trainer, recipe, len(data.train_user), u4.NEUMF_CHECKPOINTS, measure,
                                 lambda found: u4.beats_popularity(found, baseline))
    hit, auc = baseline
    beats = {"Hit@10": max(h for h, _ in results) - hit, "AUC": max(a for _, a in results) - auc}
    return Run(min(beats["Hit@10"] - u4.NEUMF_HIT_MARGIN, beats["AUC"] - u4.NEUMF_AUC_MARGIN), t, m, stop, beats)


#: Each training and its recipes: the full one, and the quick one the check tries first.
CHECKS = {"mf": (mf, u4.MF_TRAINING, u4.MF_QUICK), "autorec": (autorec, u4.AUTOREC_TRAINING, u4.AUTOREC_QUICK),
          "neumf": (neumf, u4.NEUMF_TRAINING, u4.NEUMF_QUICK)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", choices=sorted(CHECKS), action="append",
                        help="which training (repeatable; default: all three)")
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--first-seed", type=int, default=0)
    for field in ("batch_size", "epochs"):
        parser.add_argument(f"--{field.replace('_', '-')}", type=int, help="instead of the check's")
    parser.add_argument("--lr", type=float, help="instead of the check's")
    parser.add_argument("--early-checkpoints", type=lambda text: tuple(int(e) for e in text.split(",") if e),
                        help="comma-separated epochs measured before the last ones, instead of the check's (none "
                             "when --epochs is given)")
    parser.add_argument("--quick", action="store_true",
                        help="the quick recipe the check tries first, not the full one")
    args = parser.parse_args()
    torch.set_num_threads(1)
    overrides = {k: v for k, v in (("batch_size", args.batch_size), ("epochs", args.epochs), ("lr", args.lr))
                 if v is not None}
    if args.early_checkpoints is not None or args.epochs is not None:  # the check's may not fit other epochs
        overrides["early_checkpoints"] = args.early_checkpoints or ()
    for name in args.check or sorted(CHECKS):
        train, full, quick = CHECKS[name]
        recipe = replace(quick if args.quick else full, **overrides)
        runs = [train(torch.Generator().manual_seed(seed), recipe)
                for seed in range(args.first_seed, args.first_seed + args.seeds)]
        margins = sorted(r.margin for r in runs)
        early = f" (also measured after {', '.join(map(str, recipe.early_checkpoints))})" \
            if recipe.early_checkpoints else ""
        print(f"{name:8} batch {recipe.batch_size}, lr {recipe.lr}, {recipe.epochs} epochs{early}, {args.seeds} seeds: "
              f"margin min {margins[0]:+.3f}, median {statistics.median(margins):+.3f}, max {margins[-1]:+.3f}; "
              f"training {statistics.mean(r.train_seconds for r in runs):.2f} s, measuring "
              f"{statistics.mean(r.measure_seconds for r in runs):.2f} s", flush=True)
        stops = sorted(r.stop_epoch for r in runs)
        print(f"{'':8} the check stops after epoch {stops[0]} to {stops[-1]} (mean {statistics.mean(stops):.1f}) of "
              f"{recipe.epochs}", flush=True)
        for measure in runs[0].beats:
            beats = sorted(r.beats[measure] for r in runs)
            print(f"{'':8} beats popularity in {measure} by {beats[0]:.3f} to {beats[-1]:.3f} (median "
                  f"{statistics.median(beats):.3f})", flush=True)


if __name__ == "__main__":
    main()
