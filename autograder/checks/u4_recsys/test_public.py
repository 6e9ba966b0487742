"""Public checks of Unit 4 (recommender systems). Students run these from their notebook; they also grade."""

import pytest
import torch

from autograder.checklib import compare_speed, expect_close, size
from autograder.checklib.forbidden import CROSS_ENTROPY, RANKING_LOSSES, SOFTMAX
from autograder.checks.u4_recsys.common import (
    ALS_HINT, ALS_SPEED_DENSITY, ALS_SPEED_FACTORS, ALS_SPEED_ITEMS, ALS_SPEED_USERS, AUTOREC_CHECKPOINTS,
    AUTOREC_TARGET, AUTOREC_TRAINING, MF_CHECKPOINTS, MF_MARGIN, MF_TRAINING, NEUMF_AUC_MARGIN, NEUMF_CHECKPOINTS,
    NEUMF_HIT_MARGIN, NEUMF_K, NEUMF_TRAINING, als_case, als_inputs, als_speed_reference, alternating_case,
    autorec_forward_case, autorec_gradient_case, autorec_inputs, autorec_reached, beats_popularity, bpr_case,
    build_autorec, build_mf, build_neumf, case, expect_dropout_active, hinge_case, hit_and_auc_case,
    load_random_weights, mf_forward_case, mf_gradient_case, mf_reached, neumf_forward_case, neumf_gradient_case,
    random_ids, random_ranking, score_pairs, shown, train_autorec, train_mf, train_neumf,
)
from autograder.errors import CheckFailure
from autograder.rules import ByHand

#: What part 6 must be written without, and what the training of part 9 builds on (the notebook's introduction
#: states the same table).
BY_HAND = [
    ByHand("ranking_losses", names=("bpr_loss", "hinge_loss"), forbid=(RANKING_LOSSES, CROSS_ENTROPY, SOFTMAX),
           instead="`torch.log1p`, `torch.exp`, `torch.clamp`"),
    ByHand("neumf_training", names=("bpr_loss",), forbid=(RANKING_LOSSES, CROSS_ENTROPY, SOFTMAX),
           instead="la regla de la parte 6"),
]


def ids_case(what: str, users: torch.Tensor, items: torch.Tensor) -> str:
    return f"{what}, lote de {len(users)}, user_id = {users.tolist()}, item_id = {items.tolist()}"


# --------------------------------------------------------------------------- 1. matrix factorization

@pytest.mark.grade_id("mf")
@pytest.mark.points(2)
def test_mf_matches_reference(student, device, rng):
    """¿`MF` predice $\\mathbf{p}_u^\\top \\mathbf{q}_i + b_u + b_i$ como la referencia con los mismos pesos?"""
    for _ in range(3):
        k, U, I = size(rng, 1, 6), size(rng, 2, 12), size(rng, 2, 15)
        model, state = build_mf(student, k, U, I, device)
        weights = load_random_weights(student, rng, model, state, device, "`MF`")
        for B in (1, size(rng, 2, 10)):
            users, items = random_ids(rng, U, B, device), random_ids(rng, I, B, device)
            with case(ids_case(f"MF({k}, {U}, {I})", users, items)):
                mf_forward_case(model, weights, users, items)


@pytest.mark.grade_id("mf")
@pytest.mark.points(1)
def test_mf_gradients_match_autograd(student, device, rng):
    """¿Los gradientes de `P`, `Q`, `user_bias` e `item_bias` coinciden con los de autograd en la referencia?"""
    k, U, I = size(rng, 2, 5), size(rng, 3, 10), size(rng, 3, 12)
    model, state = build_mf(student, k, U, I, device)
    weights = load_random_weights(student, rng, model, state, device, "`MF`")
    B = size(rng, 4, 12)
    users, items = random_ids(rng, U, B, device), random_ids(rng, I, B, device)
    with case(ids_case(f"MF({k}, {U}, {I})", users, items)):
        mf_gradient_case(student, rng, model, weights, users, items)


# --------------------------------------------------------------------------- 2. training the factorization

@pytest.mark.grade_id("mf_training")
@pytest.mark.points(3)
@pytest.mark.time_limit(180)
def test_mf_training_reaches_noise_level(student, device, rng):
    """¿Entrenada con Adam, tu `MF` llega en calificaciones nuevas a un RMSE cercano al del ruido?"""
    rmses, noise = train_mf(student, rng, device)
    if not mf_reached(rmses, noise):
        raise CheckFailure(
            f"Tras {MF_TRAINING.epochs} épocas de Adam (lotes de {MF_TRAINING.batch_size}, tasa {MF_TRAINING.lr}), "
            f"el RMSE de tu `MF` en calificaciones que no vio (medido con la referencia cargada con tus pesos) fue "
            f"{shown(rmses)} en las últimas {MF_CHECKPOINTS} épocas; se "
            f"esperaba como mucho {noise + MF_MARGIN:.3f} en alguna: el ruido de los datos ({noise:.3f}) más "
            f"{MF_MARGIN}. La solución queda a 0.10 del ruido o menos, y predecir con los sesgos de usuarios e "
            "ítems solamente, a unos 0.2. Pista: revisa `MF` con las comprobaciones de la parte 1 (los sesgos "
            "también se entrenan).")


# --------------------------------------------------------------------------- 3. alternating least squares

@pytest.mark.grade_id("als")
@pytest.mark.points(2)
def test_als_update_matches_reference(student, device, rng):
    """¿`als_update` resuelve la regresión ridge de cada usuario, con varios $\\lambda$ y usuarios sin calificaciones?"""
    for lam, empty in ((0.1, 0), (1.0, 1), (10.0, 2)):
        U, I, k = size(rng, 2, 8) + empty, size(rng, 3, 10), size(rng, 1, 4)
        R, mask, Q = als_inputs(rng, U, I, k, 0.5, device, empty_users=empty)
        users = "" if not empty else f", los primeros {empty} usuarios sin calificaciones"
        with case(f"R y mask de forma {(U, I)} (R con valores cualesquiera fuera de mask){users}, Q de forma "
                  f"{(I, k)}, lam = {lam}"):
            als_case(student, R, mask, Q, lam)


@pytest.mark.grade_id("als")
@pytest.mark.points(1)
def test_als_alternating_steps_lower_the_objective(student, device, rng):
    """¿Alternar `als_update` para $\\mathbf{P}$ y (con `R.T`, `mask.T`) para $\\mathbf{Q}$ baja el objetivo como la referencia?"""
    U, I, k, lam = size(rng, 15, 25), size(rng, 10, 20), 3, 0.5
    R, mask, Q = als_inputs(rng, U, I, k, 0.4, device)
    with case(f"R de forma {(U, I)}, k = {k}, lam = {lam}, 5 alternancias desde una Q al azar"):
        alternating_case(student, R, mask, Q, lam, 5)


@pytest.mark.grade_id("als")
@pytest.mark.points(2)
@pytest.mark.timing(max_ratio=20)
@pytest.mark.time_limit(120)
def test_als_update_is_vectorised(student, device, rng, speed_budget):
    """¿`als_update` resuelve todos los usuarios a la vez (sin un bucle de Python sobre ellos)?"""

    def make_inputs():  # fresh ratings for every call: thousands of users, float32
        R, mask, Q = als_inputs(rng, ALS_SPEED_USERS, ALS_SPEED_ITEMS, ALS_SPEED_FACTORS, ALS_SPEED_DENSITY, device,
                                dtype=torch.float32)
        return R, mask, Q, 1.0

    def verify(result, inputs):
        R, mask, Q, lam = inputs
        expected = als_speed_reference(R.double(), mask, Q.double(), lam).float()
        expect_close(result, expected, name="als_update(R, mask, Q, lam)", rtol=1e-4, hint=ALS_HINT)

    compare_speed(student=student.als_update, reference=als_speed_reference, make_inputs=make_inputs, verify=verify,
                  budget=speed_budget, name="als_update", device=device)


# --------------------------------------------------------------------------- 4. AutoRec

@pytest.mark.grade_id("autorec")
@pytest.mark.points(2)
def test_autorec_matches_reference(student, device, rng):
    """¿`AutoRec` reconstruye como la referencia, enmascarando la salida con `sign(input)` solo en modo `train`?"""
    for _ in range(2):
        h, U = size(rng, 1, 6), size(rng, 3, 12)
        model, state = build_autorec(student, h, U, device)
        weights = load_random_weights(student, rng, model, state, device, "`AutoRec`")
        for B, mode in ((1, "train"), (size(rng, 2, 6), "train"), (size(rng, 2, 6), "eval")):
            X = autorec_inputs(rng, B, U, 0.5, device)
            with case(f"AutoRec({h}, {U}, dropout=0.0) en modo {mode}, input de forma {(B, U)}"):
                autorec_forward_case(model, weights, X, mode)


@pytest.mark.grade_id("autorec")
@pytest.mark.points(1)
def test_autorec_gradients_match_autograd(student, device, rng):
    """¿Los gradientes de `AutoRec` (entrada, `encoder` y `decoder`) coinciden con los de autograd en la referencia?"""
    h, U, B = size(rng, 2, 6), size(rng, 3, 10), size(rng, 2, 5)
    model, state = build_autorec(student, h, U, device)
    weights = load_random_weights(student, rng, model, state, device, "`AutoRec`")
    with case(f"AutoRec({h}, {U}, dropout=0.0) en modo train, input de forma {(B, U)}"):
        autorec_gradient_case(student, rng, model, weights, autorec_inputs(rng, B, U, 0.5, device))


@pytest.mark.grade_id("autorec")
@pytest.mark.points(1)
def test_autorec_dropout_only_in_train(student, device, rng):
    """¿Con `dropout=0.5`, `AutoRec` aplica el *dropout* en modo `train` y en modo `eval` es determinista y sin él?"""
    h, U = 6, 8
    model, state = build_autorec(student, h, U, device, dropout=0.5)
    weights = load_random_weights(student, rng, model, state, device, "`AutoRec`")
    X = autorec_inputs(rng, 4, U, 0.6, device)
    with case(f"AutoRec({h}, {U}, dropout=0.5) en modo eval, input de forma {(4, U)}"):
        first = autorec_forward_case(model, weights, X, "eval")
        if not torch.equal(autorec_forward_case(model, weights, X, "eval"), first):
            raise CheckFailure("En modo `eval`, `AutoRec` dio resultados distintos para la misma entrada. Pista: usa "
                               "`nn.Dropout`, que en `eval` no hace nada.")
    with case(f"AutoRec({h}, {U}, dropout=0.5) en modo train, input de forma {(4, U)}"):
        expect_dropout_active(model, X)


# --------------------------------------------------------------------------- 5. training AutoRec

@pytest.mark.grade_id("autorec_training")
@pytest.mark.points(3)
@pytest.mark.time_limit(180)
def test_autorec_training_reaches_rmse(student, device, rng):
    """¿Entrenado con Adam, tu `AutoRec` llega a un RMSE $\\leq 0.75$ en calificaciones nuevas?"""
    rmses = train_autorec(student, rng, device)
    if not autorec_reached(rmses):
        raise CheckFailure(
            f"Tras {AUTOREC_TRAINING.epochs} épocas de Adam, el RMSE de tu `AutoRec` en calificaciones que no vio "
            f"(medido con la referencia en modo `eval` cargada con tus pesos) fue {shown(rmses)} en las últimas "
            f"{AUTOREC_CHECKPOINTS} épocas; se esperaba como mucho {AUTOREC_TARGET} en alguna (la solución llega a "
            "0.72 o menos, y los sesgos de usuarios e ítems solamente, a 0.76). Pista: en modo `train` la salida se "
            "multiplica por `sign(input)`, así la pérdida cuenta solo las calificaciones observadas; revisa "
            "`AutoRec` con las comprobaciones de la parte 4.")


# --------------------------------------------------------------------------- 6. ranking losses

@pytest.mark.grade_id("ranking_losses")
@pytest.mark.points(2)
def test_bpr_loss_matches_reference(student, device, rng):
    """¿`bpr_loss` es el promedio de $-\\log \\sigma(s^+ - s^-)$?"""
    for n in (1, size(rng, 2, 8), size(rng, 20, 60)):
        pos, neg = score_pairs(rng, n, device)
        with case(f"pos_scores = {pos.tolist()}, neg_scores = {neg.tolist()}" if n < 10 else
                  f"{n} pares de puntajes al azar"):
            bpr_case(student, pos, neg)


@pytest.mark.grade_id("ranking_losses")
@pytest.mark.points(1)
def test_bpr_loss_is_stable(student, device, rng):
    """¿`bpr_loss` es finita y exacta con diferencias de puntajes de $\\pm 1000$?"""
    for differences in ((1000.0, -1000.0), (-1000.0,), (1000.0, 1000.0, -30.0, 30.0)):
        pos, neg = score_pairs(rng, 2, device, differences=differences)
        with case(f"pos_scores = {pos.tolist()}, neg_scores = {neg.tolist()}"):
            bpr_case(student, pos, neg)


@pytest.mark.grade_id("ranking_losses")
@pytest.mark.points(1)
def test_hinge_loss_matches_reference(student, device, rng):
    """¿`hinge_loss` es el promedio de $\\max(0, m - s^+ + s^-)$, con el margen por defecto y con otro?"""
    for margin in (None, 0.5, 2.5):
        n = size(rng, 2, 8)
        pos, neg = score_pairs(rng, n, device)
        with case(f"pos_scores = {pos.tolist()}, neg_scores = {neg.tolist()}, "
                  + ("margin por defecto" if margin is None else f"margin = {margin}")):
            hinge_case(student, pos, neg, margin)


# --------------------------------------------------------------------------- 7. NeuMF

def random_hiddens(rng: torch.Generator) -> tuple[int, ...]:
    return tuple(size(rng, 2, 8) for _ in range(size(rng, 1, 3)))


@pytest.mark.grade_id("neumf")
@pytest.mark.points(2)
def test_neumf_matches_reference(student, device, rng):
    """¿`NeuMF` combina GMF y el MLP como la referencia con los mismos pesos, con una o varias capas ocultas?"""
    for _ in range(3):
        k, U, I, hiddens = size(rng, 1, 5), size(rng, 2, 10), size(rng, 2, 12), random_hiddens(rng)
        model, state, layers = build_neumf(student, k, U, I, hiddens, device)
        weights = load_random_weights(student, rng, model, state, device, "`NeuMF`")
        for B in (1, size(rng, 2, 10)):
            users, items = random_ids(rng, U, B, device), random_ids(rng, I, B, device)
            with case(ids_case(f"NeuMF({k}, {U}, {I}, {list(hiddens)})", users, items)):
                neumf_forward_case(model, weights, layers, users, items)


@pytest.mark.grade_id("neumf")
@pytest.mark.points(2)
def test_neumf_gradients_match_autograd(student, device, rng):
    """¿Los gradientes de todos los parámetros de `NeuMF` coinciden con los de autograd en la referencia?"""
    for _ in range(2):
        k, U, I, hiddens = size(rng, 2, 4), size(rng, 3, 8), size(rng, 3, 10), random_hiddens(rng)
        model, state, layers = build_neumf(student, k, U, I, hiddens, device)
        weights = load_random_weights(student, rng, model, state, device, "`NeuMF`")
        B = size(rng, 3, 10)
        users, items = random_ids(rng, U, B, device), random_ids(rng, I, B, device)
        with case(ids_case(f"NeuMF({k}, {U}, {I}, {list(hiddens)})", users, items)):
            neumf_gradient_case(student, rng, model, weights, layers, users, items)


# --------------------------------------------------------------------------- 8. Hit@k and AUC

NEG = float("-inf")
#: Small rankings with their answers explained: scores per user, each user's test item, k, (hit, auc).
HAND_MADE = [
    ([[0.9, 0.1, 0.5, NEG, 0.3]], [2], 1, (0.0, 2 / 3),
     "un usuario, ítem de prueba 2 (puntaje 0.5), k = 1: un candidato (0.9) tiene puntaje mayor, así que no es el "
     "mejor (hit = 0); de los otros 3 candidatos (el -inf no lo es), 2 tienen puntaje menor (0.1 y "
     "0.3): AUC = 2/3"),
    ([[0.9, 0.1, 0.5, NEG, 0.3]], [2], 2, (1.0, 2 / 3),
     "el mismo, con k = 2: el ítem de prueba es el segundo, así que está entre los 2 mejores (hit = 1)"),
    ([[0.3, NEG, 0.5, 0.1]], [0], 1, (0.0, 0.5),
     "un usuario, ítem de prueba 0 (puntaje 0.3), k = 1: 0.5 le gana (hit = 0); de los otros 2 candidatos, uno "
     "(0.1) tiene puntaje menor: AUC = 1/2 (el -inf no es un candidato: no cuenta como «menor»)"),
    ([[2.0, 1.0, 0.5], [2.0, 1.0, 0.5]], [0, 2], 2, (0.5, 0.5),
     "dos usuarios, k = 2: el primero tiene su ítem de prueba primero (hit 1, AUC 1) y el segundo último (hit 0, "
     "AUC 0); se promedian: 0.5 y 0.5"),
    ([[NEG, -2.0, NEG, -1.0]], [3], 5, (1.0, 1.0),
     "puntajes negativos (logits) y k = 5, más que los 2 candidatos: el ítem de prueba (3, puntaje -1.0) está entre "
     "los 5 mejores y el otro candidato tiene puntaje menor: hit = 1, AUC = 1"),
]


@pytest.mark.grade_id("hit_and_auc")
@pytest.mark.points(2)
def test_hit_and_auc_hand_made(student, device):
    """¿`hit_and_auc` da lo esperado en rankings chicos hechos a mano (con `-inf` en los no candidatos)?"""
    for scores, test_items, k, answer, description in HAND_MADE:
        with case(description):
            hit_and_auc_case(student, torch.tensor(scores, dtype=torch.float64, device=device),
                             torch.tensor(test_items, device=device), k, expected=answer)


@pytest.mark.grade_id("hit_and_auc")
@pytest.mark.points(2)
def test_hit_and_auc_random_rankings(student, device, rng):
    """¿`hit_and_auc` acierta en rankings al azar con muchos no candidatos y varios $k$?"""
    for candidates in (0.1, 0.3, 0.6):
        U, I, k = size(rng, 3, 30), size(rng, 20, 60), size(rng, 1, 15)
        scores, test_items = random_ranking(rng, U, I, candidates, device)
        with case(f"{U} usuarios, {I} ítems, cerca del {100 * candidates:.0f} % candidatos, k = {k}"):
            hit_and_auc_case(student, scores, test_items, k)


# --------------------------------------------------------------------------- 9. training NeuMF with BPR

@pytest.mark.grade_id("neumf_training")
@pytest.mark.points(4)
@pytest.mark.time_limit(180)
def test_neumf_training_beats_popularity(student, device, rng):
    """¿Entrenado con tu `bpr_loss`, tu `NeuMF` rankea los ítems nuevos claramente mejor que la popularidad?"""
    results, (hit, auc) = train_neumf(student, rng, device)
    if not beats_popularity(results, (hit, auc)):
        measured = "; ".join(f"Hit@{NEUMF_K} {h:.3f} y AUC {a:.3f}" for h, a in results)
        raise CheckFailure(
            f"Tras {NEUMF_TRAINING.epochs} épocas de Adam con tu `bpr_loss`, tu `NeuMF` (medido con la referencia "
            f"cargada con tus pesos, sobre el ítem que cada usuario no mostró) logró {measured} en las últimas "
            f"{NEUMF_CHECKPOINTS} épocas; recomendar lo más popular logra Hit@{NEUMF_K} {hit:.3f} y AUC {auc:.3f}. "
            f"Se esperaba superarlo, en alguna de esas épocas, por al menos {NEUMF_HIT_MARGIN} en Hit@{NEUMF_K} y "
            f"por {NEUMF_AUC_MARGIN} en AUC (la solución lo supera por 0.03 o más en ambas). Pista: la pérdida "
            "debe bajar cuando $s^+ > s^-$ ($-\\log\\sigma(s^+ - s^-)$, no al revés); revisa `bpr_loss` y `NeuMF` con "
            "las comprobaciones de las partes 6 y 7.")

