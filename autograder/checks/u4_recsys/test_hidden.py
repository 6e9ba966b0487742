"""Hidden checks of Unit 4: edge cases, gradients in corner cases, and the first training steps replayed exactly."""

import pytest
import torch

from autograder.checklib import randn
from autograder.checklib.ratings import implicit_leave_one_out, rating_matrix, split_data_ml100k, synthetic_ratings
from autograder.checks.u4_recsys.common import (
    AUTOREC_HINT, AUTOREC_NAMES_HINT, BPR_HINT, HINGE_HINT, MF_HINT, MF_NAMES_HINT, NEUMF_NAMES_HINT,
    ReferenceAutoRec, ReferenceMF, ReferenceNeuMF, Training, alternating_case, als_case, als_inputs,
    autorec_forward_case, autorec_inputs, autorec_shapes, bpr_case, build_autorec, build_mf, build_neumf, case,
    expect_hidden_dropout, expect_same_weights, hinge_case, hit_and_auc_case, load_random_weights,
    loss_gradient_case, make_bpr_trainer, mf_forward_case, mf_gradient_case, mf_shapes, neumf_forward_case,
    neumf_gradient_case, neumf_shapes, random_ids, random_ranking, reference_bpr, reference_hinge, reference_names,
    replay_steps, replayed_training, score_pairs, trained_parameters,
)
from autograder.drivers import AutoRecTrainer, BPRTrainer, RatingTrainer
from autograder.remote import drive

pytestmark = pytest.mark.hidden


# --------------------------------------------------------------------------- 1. matrix factorization

MF_EDGE_CASES = [  # k, U, I, B
    (1, 4, 6, 1),     # one factor, batch 1
    (3, 1, 1, 4),     # one user and one item: every id repeats
    (5, 7, 3, 40),    # many repeated ids
    (8, 20, 30, 2),   # only the first and the last ids
]


@pytest.mark.grade_id("mf")
@pytest.mark.points(1)
def test_mf_edge_cases(student, device, rng):
    """¿`MF` acierta con un solo factor, lote de 1, un solo usuario e ítem, ids repetidos y en los extremos, y en modo `eval`?"""
    for i, (k, U, I, B) in enumerate(MF_EDGE_CASES):
        model, state = build_mf(student, k, U, I, device)
        weights = load_random_weights(student, rng, model, state, device, "`MF`")
        users, items = random_ids(rng, U, B, device), random_ids(rng, I, B, device)
        with case(f"caso borde {i + 1}"):
            mf_forward_case(model, weights, users, items)
        model.eval()
        with case(f"caso borde {i + 1} en modo eval"):
            mf_forward_case(model, weights, users, items)


@pytest.mark.grade_id("mf")
@pytest.mark.points(1)
def test_mf_gradient_edge_cases(student, device, rng):
    """¿Los gradientes de `MF` aciertan con lote de 1 y con ids repetidos (que suman sus gradientes)?"""
    for i, (k, U, I, B) in enumerate(MF_EDGE_CASES):
        model, state = build_mf(student, k, U, I, device)
        weights = load_random_weights(student, rng, model, state, device, "`MF`")
        with case(f"caso borde {i + 1}"):
            mf_gradient_case(student, rng, model, weights, random_ids(rng, U, B, device),
                             random_ids(rng, I, B, device))


# --------------------------------------------------------------------------- 2. training the factorization

#: A replayed training: a small data set, float64 (so the two runs agree to rounding), steps across an epoch end.
REPLAY_USERS, REPLAY_ITEMS, REPLAY_RATINGS = 60, 80, 2000
MF_REPLAY = Training(init_std=0.1, lr=0.01, weight_decay=1e-5, batch_size=64, epochs=1)
MF_REPLAY_FACTORS, MF_REPLAY_STEPS = 8, 40
REPLAY_HINT = ("tras unos pasos de entrenamiento, los pesos no son los de la referencia entrenada igual (mismos pesos "
               "iniciales, mismos lotes, Adam). ")


def replay_ratings(rng: torch.Generator):
    seed = int(torch.randint(0, 2**31, (1,), generator=rng))
    return synthetic_ratings(num_users=REPLAY_USERS, num_items=REPLAY_ITEMS, num_ratings=REPLAY_RATINGS, seed=seed)


@pytest.mark.grade_id("mf_training")
@pytest.mark.points(1)
@pytest.mark.time_limit(120)
def test_mf_first_steps_match_reference(student, device, rng):
    """¿Los primeros pasos de entrenamiento de tu `MF` dan los mismos pesos que con la referencia?"""
    train, _ = split_data_ml100k(replay_ratings(rng), split_mode="random", test_ratio=0.1, seed=0)
    k, U, I = MF_REPLAY_FACTORS, REPLAY_USERS, REPLAY_ITEMS
    model, _ = build_mf(student, k, U, I, device)
    settings = MF_REPLAY.settings(int(torch.randint(0, 2**31, (1,), generator=rng)))
    trainer = drive(student, "make_rating_trainer", model, train.user, train.item, train.rating,
                    label="make_rating_trainer(MF, ...)", **settings)
    shapes, what = mf_shapes(k, U, I), "`MF`"
    initial = trained_parameters(student, model, shapes, what=what, hint=MF_NAMES_HINT, dtype=torch.float64)
    replay_steps(student, trainer, MF_REPLAY_STEPS, names="`MF`")
    got = trained_parameters(student, model, shapes, what=what, hint=MF_NAMES_HINT, dtype=torch.float64)
    expected = replayed_training(lambda m: RatingTrainer(m, train.user, train.item, train.rating, **settings),
                                 ReferenceMF(k, U, I).double(), initial, MF_REPLAY_STEPS)
    with case("entrenamiento corto"):
        expect_same_weights(got, expected, rtol=1e-8, hint=REPLAY_HINT + MF_HINT)


# --------------------------------------------------------------------------- 3. alternating least squares

ALS_EDGE_CASES = [  # U, I, k, density, users without ratings, lambda, dtype
    (6, 8, 3, 0.5, 3, 1.0, torch.float64),      # half the users rate nothing
    (1, 9, 4, 0.6, 0, 0.5, torch.float64),      # one user
    (5, 1, 3, 1.0, 0, 2.0, torch.float64),      # one item, more factors than items
    (7, 6, 2, 1.0, 0, 0.3, torch.float64),      # every rating observed
    (8, 12, 3, 0.7, 0, 1e-3, torch.float64),    # a tiny lambda
    (6, 10, 3, 0.5, 1, 1e3, torch.float64),     # a huge lambda
    (9, 11, 1, 0.4, 1, 1.0, torch.float64),     # one factor
    (10, 14, 4, 0.5, 2, 1.0, torch.float32),    # float32
]


@pytest.mark.grade_id("als")
@pytest.mark.points(2)
def test_als_update_edge_cases(student, device, rng):
    """¿`als_update` acierta con usuarios sin calificaciones, un solo usuario o ítem, todo observado, $\\lambda$ extremos y float32?"""
    for i, (U, I, k, density, empty, lam, dtype) in enumerate(ALS_EDGE_CASES):
        R, mask, Q = als_inputs(rng, U, I, k, density, device, dtype=dtype, empty_users=empty)
        with case(f"caso borde {i + 1}"):
            als_case(student, R, mask, Q, lam, rtol=1e-4 if dtype == torch.float32 else None)


@pytest.mark.grade_id("als")
@pytest.mark.points(1)
def test_als_alternating_with_empty_rows(student, device, rng):
    """¿ALS alterna bien con más ítems que usuarios, y usuarios e ítems sin calificaciones?"""
    U, I, k, lam = 12, 30, 4, 0.2
    R, mask, Q = als_inputs(rng, U, I, k, 0.35, device, empty_users=2)
    mask[:, :3] = False  # three items nobody rated
    with case("alternancias"):
        alternating_case(student, R, mask, Q, lam, 8)


# --------------------------------------------------------------------------- 4. AutoRec

@pytest.mark.grade_id("autorec")
@pytest.mark.points(1)
def test_autorec_edge_cases(student, device, rng):
    """¿`AutoRec` acierta con lote de 1, una sola unidad oculta, filas vacías o completas, y el *dropout* en la capa oculta?"""
    cases = [  # h, U, B, density, mode
        (1, 5, 1, 0.6, "train"), (1, 5, 3, 0.6, "eval"), (4, 7, 3, 0.0, "train"), (4, 7, 3, 1.0, "train"),
        (3, 1, 2, 1.0, "eval"),
    ]
    for i, (h, U, B, density, mode) in enumerate(cases):
        model, state = build_autorec(student, h, U, device)
        weights = load_random_weights(student, rng, model, state, device, "`AutoRec`")
        with case(f"caso borde {i + 1}"):
            autorec_forward_case(model, weights, autorec_inputs(rng, B, U, density, device), mode)
    model, state = build_autorec(student, 3, 6, device, dropout=0.5)
    weights = load_random_weights(student, rng, model, state, device, "`AutoRec`")
    with case("dropout=0.5 en modo train"):
        expect_hidden_dropout(model, weights, autorec_inputs(rng, 8, 6, 0.7, device), 0.5)


# --------------------------------------------------------------------------- 5. training AutoRec

AUTOREC_REPLAY = Training(init_std=0.1, lr=0.01, weight_decay=1e-5, batch_size=16, epochs=1)
AUTOREC_REPLAY_HIDDEN, AUTOREC_REPLAY_STEPS = 16, 20


@pytest.mark.grade_id("autorec_training")
@pytest.mark.points(1)
@pytest.mark.time_limit(120)
def test_autorec_first_steps_match_reference(student, device, rng):
    """¿Los primeros pasos de entrenamiento de tu `AutoRec` (sin *dropout*) dan los mismos pesos que con la referencia?"""
    rows = rating_matrix(replay_ratings(rng))[0].T.contiguous()                          # (I, U)
    h, U = AUTOREC_REPLAY_HIDDEN, REPLAY_USERS
    model, _ = build_autorec(student, h, U, device)
    settings = AUTOREC_REPLAY.settings(int(torch.randint(0, 2**31, (1,), generator=rng)))
    trainer = drive(student, "make_autorec_trainer", model, rows, label="make_autorec_trainer(AutoRec, ...)",
                    **settings)
    shapes, what = autorec_shapes(h, U), "`AutoRec`"
    initial = trained_parameters(student, model, shapes, what=what, hint=AUTOREC_NAMES_HINT, dtype=torch.float64)
    replay_steps(student, trainer, AUTOREC_REPLAY_STEPS, names="`AutoRec`")
    got = trained_parameters(student, model, shapes, what=what, hint=AUTOREC_NAMES_HINT, dtype=torch.float64)
    expected = replayed_training(lambda m: AutoRecTrainer(m, rows, **settings), ReferenceAutoRec(h, U).double(),
                                 initial, AUTOREC_REPLAY_STEPS)
    with case("entrenamiento corto"):
        expect_same_weights(got, expected, rtol=1e-8, hint=REPLAY_HINT + AUTOREC_HINT)


# --------------------------------------------------------------------------- 6. ranking losses

@pytest.mark.grade_id("ranking_losses")
@pytest.mark.points(1)
def test_bpr_loss_edge_cases(student, device, rng):
    """¿`bpr_loss` es exacta con pérdidas diminutas o enormes, en float32, y sus gradientes son finitos en los extremos?"""
    cases = [
        ("pérdida diminuta", score_pairs(rng, 0, device, differences=(38.0, 40.0, 45.0, 50.0))),
        ("un solo par muy mal ordenado", score_pairs(rng, 0, device, differences=(-800.0,))),
        ("float32", score_pairs(rng, 6, device, dtype=torch.float32, differences=(-200.0, 200.0))),
        ("puntajes iguales", (randn(rng, 5, device=device),) * 2),
    ]
    for i, (description, (pos, neg)) in enumerate(cases):
        with case(f"caso borde {i + 1}"):
            bpr_case(student, pos, neg)
    for i, differences in enumerate(((1000.0, -1000.0, 0.5), (-1000.0, -999.0), (1000.0, 40.0))):
        with case(f"gradientes, caso borde {i + 1}"):
            loss_gradient_case(student, rng, "bpr_loss", *score_pairs(rng, 2, device, differences=differences),
                               reference_bpr, hint=BPR_HINT)


@pytest.mark.grade_id("ranking_losses")
@pytest.mark.points(1)
def test_hinge_loss_edge_cases(student, device, rng):
    """¿`hinge_loss` acierta con margen 0, márgenes grandes, todos los pares dentro o fuera del margen, float32 y sus gradientes?"""
    pos, neg = score_pairs(rng, 0, device, differences=(3.0, 4.5, 2.0))
    cases = [
        (score_pairs(rng, 7, device), 0.0),
        (score_pairs(rng, 5, device), 10.0),       # every pair inside the margin
        ((pos, neg), 1.0),                          # every pair beyond the margin: the loss is 0
        (score_pairs(rng, 1, device), None),        # one pair
        (score_pairs(rng, 6, device, dtype=torch.float32), 1.5),
    ]
    for i, ((pos, neg), margin) in enumerate(cases):
        with case(f"caso borde {i + 1}"):
            hinge_case(student, pos, neg, margin)
    for i, margin in enumerate((1.0, 2.5)):
        with case(f"gradientes, caso borde {i + 1}"):
            loss_gradient_case(student, rng, "hinge_loss", *score_pairs(rng, 6, device), reference_hinge,
                               hint=HINGE_HINT, extra=(margin,))


# --------------------------------------------------------------------------- 7. NeuMF

NEUMF_EDGE_CASES = [  # k, U, I, hiddens, B, weight scale
    (1, 4, 5, (1,), 1, 1.0),             # one factor, a hidden layer of one unit, batch 1
    (3, 1, 1, (4, 4), 5, 1.0),           # one user and one item: every id repeats
    (2, 6, 7, (3, 3, 3, 3, 3), 8, 1.0),  # five hidden layers
    (4, 9, 8, (16,), 2, 1.0),            # a wide layer, only the first and the last ids
    (3, 5, 6, (4, 2), 6, 6.0),           # large weights: the sigmoid saturates
]


@pytest.mark.grade_id("neumf")
@pytest.mark.points(1)
def test_neumf_edge_cases(student, device, rng):
    """¿`NeuMF` acierta con un solo factor, capas de una unidad, muchas capas, ids repetidos, sigmoides saturadas y en modo `eval`?"""
    for i, (k, U, I, hiddens, B, scale) in enumerate(NEUMF_EDGE_CASES):
        model, state, layers = build_neumf(student, k, U, I, hiddens, device)
        weights = load_random_weights(student, rng, model, state, device, "`NeuMF`", scale=scale)
        users, items = random_ids(rng, U, B, device), random_ids(rng, I, B, device)
        with case(f"caso borde {i + 1}"):
            neumf_forward_case(model, weights, layers, users, items)
        model.eval()
        with case(f"caso borde {i + 1} en modo eval"):
            neumf_forward_case(model, weights, layers, users, items)


@pytest.mark.grade_id("neumf")
@pytest.mark.points(1)
def test_neumf_gradient_edge_cases(student, device, rng):
    """¿Los gradientes de `NeuMF` aciertan con lote de 1, ids repetidos y muchas capas?"""
    for i, (k, U, I, hiddens, B, _) in enumerate(NEUMF_EDGE_CASES[:4]):
        model, state, layers = build_neumf(student, k, U, I, hiddens, device)
        weights = load_random_weights(student, rng, model, state, device, "`NeuMF`")
        with case(f"caso borde {i + 1}"):
            neumf_gradient_case(student, rng, model, weights, layers, random_ids(rng, U, B, device),
                                random_ids(rng, I, B, device))


# --------------------------------------------------------------------------- 8. Hit@k and AUC

def ranked_at(rng: torch.Generator, U: int, I: int, rank: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Every user's test item with exactly `rank - 1` other candidates above it (most items are candidates)."""
    scores, test_items = random_ranking(rng, U, I, 0.6, "cpu")
    for u in range(U):
        others = scores[u].isfinite()
        others[test_items[u]] = False
        ranked = scores[u][others].sort(descending=True).values                         # (n,) n >= rank
        padded = torch.cat([ranked[:1] + 1, ranked, ranked[-1:] - 1])
        scores[u, test_items[u]] = (padded[rank - 1] + padded[rank]) / 2
    return scores.to(device), test_items.to(device)


@pytest.mark.grade_id("hit_and_auc")
@pytest.mark.points(2)
def test_hit_and_auc_edge_cases(student, device, rng):
    """¿`hit_and_auc` acierta con $k = 1$, $k$ mayor que los candidatos, el ítem justo en el puesto $k$ o $k + 1$, casi todo `-inf` y float32?"""
    cases = [
        (random_ranking(rng, 20, 40, 0.4, device), 1),
        (random_ranking(rng, 10, 30, 0.2, device), 50),
        (ranked_at(rng, 12, 40, 5, device), 5),             # exactly k - 1 candidates above: every user hits
        (ranked_at(rng, 12, 40, 6, device), 5),             # exactly k above: nobody hits
        (random_ranking(rng, 15, 400, 0.01, device), 3),    # almost every item is not a candidate
        (random_ranking(rng, 8, 25, 0.0, device), 1),       # two candidates per user
        (random_ranking(rng, 1, 30, 0.5, device), 4),       # a single user
        (random_ranking(rng, 10, 50, 0.5, device, dtype=torch.float32), 10),
        (random_ranking(rng, 300, 200, 0.5, device), 10),
    ]
    for i, ((scores, test_items), k) in enumerate(cases):
        with case(f"caso borde {i + 1}"):
            hit_and_auc_case(student, scores, test_items, k)
    scores, test_items = random_ranking(rng, 6, 20, 0.5, device)
    test_items[0], test_items[-1] = 0, 19  # test items at the edges of the item range
    scores[0, 0], scores[-1, 19] = 0.25, -0.75
    with case("ítems de prueba en los extremos"):
        hit_and_auc_case(student, scores, test_items, 3)


# --------------------------------------------------------------------------- 9. training NeuMF with BPR

NEUMF_REPLAY = Training(init_std=0.1, lr=0.01, weight_decay=0.0, batch_size=128, epochs=1)
NEUMF_REPLAY_FACTORS, NEUMF_REPLAY_HIDDENS, NEUMF_REPLAY_STEPS = 6, (8, 4), 20


@pytest.mark.grade_id("neumf_training")
@pytest.mark.points(2)
@pytest.mark.time_limit(120)
def test_neumf_first_steps_match_reference(student, device, rng):
    """¿Los primeros pasos de entrenamiento de tu `NeuMF` con tu `bpr_loss` dan los mismos pesos que con la referencia?"""
    data = implicit_leave_one_out(replay_ratings(rng))
    k, U, I, hiddens = NEUMF_REPLAY_FACTORS, REPLAY_USERS, REPLAY_ITEMS, NEUMF_REPLAY_HIDDENS
    model, _, layers = build_neumf(student, k, U, I, hiddens, device)
    settings = NEUMF_REPLAY.settings(int(torch.randint(0, 2**31, (1,), generator=rng)))
    trainer = make_bpr_trainer(student, model, data, settings)
    shapes, what = neumf_shapes(k, U, I, hiddens, layers), "`NeuMF`"
    reference = ReferenceNeuMF(k, U, I, hiddens).double()

    def renamed(params: dict) -> dict:
        return reference_names(params, layers, reference.layers)

    initial = trained_parameters(student, model, shapes, what=what, hint=NEUMF_NAMES_HINT, dtype=torch.float64)
    replay_steps(student, trainer, NEUMF_REPLAY_STEPS, names="`NeuMF` o `bpr_loss`")
    got = trained_parameters(student, model, shapes, what=what, hint=NEUMF_NAMES_HINT, dtype=torch.float64)
    expected = replayed_training(
        lambda m: BPRTrainer(m, reference_bpr, data.train_user, data.train_item, U, I, **settings), reference,
        renamed(initial), NEUMF_REPLAY_STEPS)
    with case("entrenamiento corto"):
        expect_same_weights(renamed(got), expected, rtol=1e-8,
                            hint=REPLAY_HINT + "Revisa `bpr_loss` (el promedio de $-\\log\\sigma(s^+ - s^-)$) y "
                                 "`NeuMF` con las comprobaciones de las partes 6 y 7.")

