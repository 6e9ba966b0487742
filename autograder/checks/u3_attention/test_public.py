"""Public checks of Unit 3 (recurrent networks, attention and the transformer). Students run these from their
notebook; they also grade."""

import pytest
import torch

from autograder.checklib import compare_speed, expect_close, expect_sequence, expect_tensor, randn, size
from autograder.checklib.forbidden import CLIP_GRAD, LSTM_LAYERS, MULTIHEAD, RNN_LAYERS, SDPA, TRANSFORMER_LAYERS
from autograder.checklib.text import ordered_markers, spanish_text
from autograder.checks.u3_attention.common import (
    ATTENTION_HINT, BLOCK_HINT, CLS_CHECKPOINTS, CLS_CHUNK, CLS_STEPS, CLS_TARGET, CLS_TEST, CLS_VOCAB, LM_BATCH,
    LM_HIDDEN, LM_LR, LM_SEQ_LEN, LM_STEPS, LM_TARGET, LM_TEST_SENTENCES, LM_THETA, LM_TRAIN_SENTENCES, LM_VOCAB,
    MASK_HINT, attention_case, attention_inputs, attention_speed_reference, bleu_case, block_gradient_case,
    build_block, build_classifier, build_multihead, case, classifier_parameters, clip_case, describe_lens,
    expect_classifier_matches_reference, load_random_weights, lstm_forward_case, lstm_gradient_case, lstm_inputs,
    masked_softmax_case, mha_forward_case, mha_gradient_case, perplexity, positional_buffer,
    positional_forward_case, random_tokens, random_valid_lens, reference_block, rnn_forward_case, rnn_gradient_case,
    rnn_inputs, train_char_lm, train_classifier,
)
from autograder.errors import CheckFailure
from autograder.rules import ByHand

#: What parts 1, 2, 3, 6, 7 and 9 must be written without, and what the trainings of parts 4 and 10 build on
#: (the notebook's introduction states the same table).
BY_HAND = [
    ByHand("rnn", names=("rnn_forward",), forbid=(RNN_LAYERS,),
           instead="un bucle sobre el tiempo con `@` y `torch.tanh`"),
    ByHand("lstm", names=("lstm_cell",), forbid=(LSTM_LAYERS,), instead="`@`, `chunk`, `torch.sigmoid`, `torch.tanh`"),
    ByHand("clipping", names=("clip_gradients",), forbid=(CLIP_GRAD,),
           instead="la norma de todos los gradientes juntos"),
    ByHand("attention", names=("scaled_dot_product_attention",), forbid=(SDPA,),
           instead="`bmm` o `@`, tu `masked_softmax`"),
    ByHand("multihead", names=("MultiHeadAttention",), forbid=(MULTIHEAD,),
           instead="`nn.Linear`, `reshape`/`transpose` y tu atención"),
    ByHand("transformer", names=("TransformerEncoderBlock",), forbid=(TRANSFORMER_LAYERS,),
           instead="tu `MultiHeadAttention`, `nn.LayerNorm`, `nn.Linear`"),
    # The trainings are only worth their points when the pieces they train keep their own rules.
    ByHand("language_model", names=("lstm_cell", "clip_gradients"), forbid=(LSTM_LAYERS, CLIP_GRAD),
           instead="las reglas de las partes 2 y 3"),
    ByHand("classifier", names=("PositionalEncoding", "TransformerEncoderBlock", "MultiHeadAttention"),
           forbid=(TRANSFORMER_LAYERS,), instead="las reglas de las partes 7 y 9"),
]


# --------------------------------------------------------------------------- 1. RNN

@pytest.mark.grade_id("rnn")
@pytest.mark.points(2)
def test_rnn_forward_matches_nn_rnn(student, device, rng):
    """¿`rnn_forward` coincide con `nn.RNN` (tanh) para formas al azar?"""
    for _ in range(3):
        T, N, D, H = size(rng, 2, 6), size(rng, 1, 4), size(rng, 1, 5), size(rng, 2, 6)
        with case(f"T={T}, N={N}, D={D}, H={H}"):
            rnn_forward_case(student, rnn_inputs(rng, T, N, D, H, device))


@pytest.mark.grade_id("rnn")
@pytest.mark.points(1)
def test_rnn_forward_backprop_through_time(student, device, rng):
    """¿La retropropagación a través del tiempo de `rnn_forward` da los gradientes de `nn.RNN`?"""
    for _ in range(2):
        T, N, D, H = size(rng, 2, 6), size(rng, 1, 3), size(rng, 1, 4), size(rng, 2, 5)
        with case(f"T={T}, N={N}, D={D}, H={H}"):
            rnn_gradient_case(student, rng, rnn_inputs(rng, T, N, D, H, device))


# --------------------------------------------------------------------------- 2. LSTM

@pytest.mark.grade_id("lstm")
@pytest.mark.points(2)
def test_lstm_cell_matches_nn_lstmcell(student, device, rng):
    """¿`lstm_cell` coincide con `nn.LSTMCell` (compuertas en el orden entrada, olvido, candidata, salida)?"""
    for _ in range(3):
        N, D, H = size(rng, 1, 4), size(rng, 1, 5), size(rng, 2, 5)
        with case(f"N={N}, D={D}, H={H}"):
            lstm_forward_case(student, lstm_inputs(rng, N, D, H, device))


@pytest.mark.grade_id("lstm")
@pytest.mark.points(1)
def test_lstm_cell_gradients_match_autograd(student, device, rng):
    """¿Los gradientes de `lstm_cell` respecto de sus seis entradas coinciden con los de `nn.LSTMCell`?"""
    for _ in range(2):
        N, D, H = size(rng, 1, 4), size(rng, 1, 4), size(rng, 2, 4)
        with case(f"N={N}, D={D}, H={H}"):
            lstm_gradient_case(student, rng, lstm_inputs(rng, N, D, H, device))


# --------------------------------------------------------------------------- 3. gradient clipping

@pytest.mark.grade_id("clipping")
@pytest.mark.points(1)
def test_clip_gradients_matches_clip_grad_norm(student, device, rng):
    """¿`clip_gradients` recorta como `clip_grad_norm_`, con la norma de todos los gradientes juntos?"""
    H, V = size(rng, 2, 5), size(rng, 3, 6)
    shapes = [(V, 4 * H), (H, 4 * H), (4 * H,), (H, V), (V,)]
    grads = [randn(rng, *shape, device=device) for shape in shapes]
    norm = sum(float((g ** 2).sum()) for g in grads) ** 0.5
    with case(f"{len(grads)} gradientes de formas {shapes}, norma total {norm:.3g} y theta = {norm / 3:.3g}"):
        clip_case(student, grads, norm / 3)
    # Each gradient alone is under theta, all of them together are not: only the global norm clips here.
    grads = [g / float(g.norm()) for g in (randn(rng, *shape, device=device) for shape in shapes[:4])]
    with case("4 gradientes de norma 1 cada uno (norma total 2) y theta = 1.5"):
        clip_case(student, grads, 1.5)


@pytest.mark.grade_id("clipping")
@pytest.mark.points(1)
def test_clip_gradients_leaves_small_gradients_alone(student, device, rng):
    """¿Si la norma total no pasa de $\\theta$, `clip_gradients` devuelve los mismos valores?"""
    grads = [randn(rng, *shape, device=device) for shape in [(3, 8), (2, 8), (8,)]]
    norm = sum(float((g ** 2).sum()) for g in grads) ** 0.5
    with case(f"norma total {norm:.3g} y theta = {2 * norm:.3g}"):
        clip_case(student, grads, 2 * norm)


# --------------------------------------------------------------------------- 4. character language model

@pytest.mark.grade_id("language_model")
@pytest.mark.points(3)
@pytest.mark.time_limit(180)
def test_char_lm_reaches_perplexity(student, device, rng):
    """¿Un modelo de lenguaje con tu `lstm_cell` y tu `clip_gradients` llega a perplejidad $\\leq 3.5$?"""
    corpus = LM_VOCAB.encode(spanish_text(rng, LM_TRAIN_SENTENCES)).to(device)
    seed = int(torch.randint(0, 2**31, (1,), generator=rng))
    # Two watched steps first, so the by-hand rules see `lstm_cell` and `clip_gradients` at work in a training.
    train_char_lm(student, corpus, hidden=8, steps=2, seq_len=8, batch_size=4, lr=LM_LR, theta=LM_THETA, seed=seed)
    result = train_char_lm(student, corpus, hidden=LM_HIDDEN, steps=LM_STEPS, seq_len=LM_SEQ_LEN,
                           batch_size=LM_BATCH, lr=LM_LR, theta=LM_THETA, seed=seed, watched=False)
    value = perplexity(result["state"], spanish_text(rng, LM_TEST_SENTENCES))  # text the worker never saw
    if not value <= LM_TARGET:
        raise CheckFailure(
            f"Tras {LM_STEPS} pasos de SGD, el modelo con tu `lstm_cell` y tu `clip_gradients` tiene perplejidad "
            f"{value:.2f} en texto nuevo (medida con `nn.LSTMCell` cargada con los pesos entrenados); se esperaba "
            f"como mucho {LM_TARGET} (la solución llega a unos 2.0 y un modelo de bigramas a 6.7). Pista: revisa el "
            "orden de las compuertas de `lstm_cell` y que `clip_gradients` use la norma de todos los gradientes "
            "juntos.")


# --------------------------------------------------------------------------- 5. masked softmax

@pytest.mark.grade_id("masked_softmax")
@pytest.mark.points(2)
def test_masked_softmax_matches_reference(student, device, rng):
    """¿`masked_softmax` anula las claves enmascaradas, con `valid_lens=None` y de forma $(B,)$?"""
    for form in ("none", "1d", "1d"):
        B, Q, K = size(rng, 1, 4), size(rng, 1, 5), size(rng, 2, 7)
        X = randn(rng, B, Q, K, device=device, scale=2.0)
        valid_lens = random_valid_lens(rng, form, B, Q, K, device)
        with case(f"X de forma {(B, Q, K)} y {describe_lens(valid_lens)}"):
            masked_softmax_case(student, X, valid_lens)


@pytest.mark.grade_id("masked_softmax")
@pytest.mark.points(1)
def test_masked_softmax_per_query_lengths(student, device, rng):
    """¿`masked_softmax` acepta `valid_lens` de forma $(B, Q)$, un largo distinto para cada consulta?"""
    for _ in range(2):
        B, Q, K = size(rng, 1, 4), size(rng, 2, 5), size(rng, 2, 7)
        X = randn(rng, B, Q, K, device=device, scale=2.0)
        valid_lens = random_valid_lens(rng, "2d", B, Q, K, device)
        with case(f"X de forma {(B, Q, K)} y {describe_lens(valid_lens)}"):
            masked_softmax_case(student, X, valid_lens)


# --------------------------------------------------------------------------- 6. scaled dot-product attention

@pytest.mark.grade_id("attention")
@pytest.mark.points(2)
def test_attention_matches_sdpa(student, device, rng):
    """¿`scaled_dot_product_attention` coincide con `F.scaled_dot_product_attention`, con o sin máscara?"""
    for form in ("none", "1d", "2d"):
        B, Q, K, d, v = size(rng, 1, 3), size(rng, 1, 5), size(rng, 2, 6), size(rng, 2, 6), size(rng, 1, 5)
        K = K + (K == Q)  # queries and keys of different lengths
        v = v + (v == d)  # values of another size than queries and keys
        valid_lens = random_valid_lens(rng, form, B, Q, K, device)
        with case(f"queries {(B, Q, d)}, keys {(B, K, d)}, values {(B, K, v)} y {describe_lens(valid_lens)}"):
            attention_case(student, *attention_inputs(rng, B, Q, K, d, v, device), valid_lens)


#: Sizes of the speed checks: float32, 4 keys, queries and values of size 4, and 1024 examples of 2 queries (a loop
#: over the batch runs 1024 Python iterations) or 2 examples of 1024 queries (a loop over the queries runs 1024).
SPEED_K, SPEED_D, SPEED_V, SPEED_MANY, SPEED_FEW = 4, 4, 4, 1024, 2


def attention_speed_case(student, rng, device, speed_budget, B: int, Q: int) -> None:
    def make_inputs():  # fresh inputs for every call, with valid_lens of shape (B,)
        queries, keys, values = attention_inputs(rng, B, Q, SPEED_K, SPEED_D, SPEED_V, device, dtype=torch.float32)
        return queries, keys, values, torch.randint(1, SPEED_K + 1, (B,), generator=rng).to(device)

    def verify(result, inputs):
        output, weights = attention_speed_reference(*inputs)
        got = expect_sequence(result, 2, name="scaled_dot_product_attention", what="`(output, weights)`")
        expect_close(got[1], weights, name="weights", hint=MASK_HINT)
        expect_close(got[0], output, name="output", hint=ATTENTION_HINT)

    compare_speed(student=student.scaled_dot_product_attention, reference=attention_speed_reference,
                  make_inputs=make_inputs, verify=verify, budget=speed_budget, name="scaled_dot_product_attention",
                  device=device)


@pytest.mark.grade_id("attention")
@pytest.mark.points(1)
@pytest.mark.timing(max_ratio=10)
def test_attention_is_vectorised_over_the_batch(student, device, rng, speed_budget):
    """¿`scaled_dot_product_attention` procesa todo el lote a la vez (sin un bucle de Python sobre los ejemplos)?"""
    attention_speed_case(student, rng, device, speed_budget, SPEED_MANY, SPEED_FEW)


@pytest.mark.grade_id("attention")
@pytest.mark.points(1)
@pytest.mark.timing(max_ratio=10)
def test_attention_is_vectorised_over_the_queries(student, device, rng, speed_budget):
    """¿`scaled_dot_product_attention` procesa todas las consultas a la vez (sin un bucle de Python sobre ellas)?"""
    attention_speed_case(student, rng, device, speed_budget, SPEED_FEW, SPEED_MANY)


# --------------------------------------------------------------------------- 7. multi-head attention

@pytest.mark.grade_id("multihead")
@pytest.mark.points(2)
def test_multihead_matches_nn_multiheadattention(student, device, rng):
    """¿`MultiHeadAttention` coincide con `nn.MultiheadAttention` con los mismos pesos?"""
    for bias in (False, True):
        num_heads = size(rng, 2, 4)
        D = num_heads * size(rng, 2, 3)
        model, state = build_multihead(student, D, num_heads, bias, device)
        weights = load_random_weights(student, rng, model, state, device, "`MultiHeadAttention`")
        for form, mode in (("none", "train"), ("1d", "train"), ("1d", "eval")):
            B, Q, K = size(rng, 1, 3), size(rng, 1, 5), size(rng, 2, 6)
            K = K + (K == Q)
            queries, keys, values = attention_inputs(rng, B, Q, K, D, D, device)
            valid_lens = random_valid_lens(rng, form, B, Q, K, device)
            getattr(model, mode)()
            with case(f"MultiHeadAttention({D}, {num_heads}, bias={bias}) en modo {mode}, queries {(B, Q, D)}, "
                      f"keys y values {(B, K, D)}, {describe_lens(valid_lens)}"):
                mha_forward_case(model, weights, num_heads, queries, keys, values, valid_lens)


@pytest.mark.grade_id("multihead")
@pytest.mark.points(1)
def test_multihead_gradients_match_autograd(student, device, rng):
    """¿Los gradientes de `MultiHeadAttention` coinciden con los de `nn.MultiheadAttention`?"""
    num_heads = size(rng, 2, 3)
    D = num_heads * size(rng, 2, 3)
    model, state = build_multihead(student, D, num_heads, False, device)
    weights = load_random_weights(student, rng, model, state, device, "`MultiHeadAttention`")
    B, Q, K = size(rng, 2, 3), size(rng, 2, 4), size(rng, 5, 6)
    valid_lens = random_valid_lens(rng, "1d", B, Q, K, device)
    with case(f"MultiHeadAttention({D}, {num_heads}), queries {(B, Q, D)}, keys y values {(B, K, D)}, "
              f"{describe_lens(valid_lens)}"):
        mha_gradient_case(student, rng, model, weights, num_heads, attention_inputs(rng, B, Q, K, D, D, device),
                          valid_lens)


@pytest.mark.grade_id("multihead")
@pytest.mark.points(1)
def test_multihead_dropout_is_off_in_eval(student, device, rng):
    """¿Con `dropout=0.5`, en modo `eval` `MultiHeadAttention` es determinista y da lo mismo que sin dropout?"""
    num_heads, D = 2, 8
    model, state = build_multihead(student, D, num_heads, False, device, dropout=0.5)
    weights = load_random_weights(student, rng, model, state, device, "`MultiHeadAttention`")
    model.eval()
    queries, keys, values = attention_inputs(rng, 2, 4, 5, D, D, device)
    valid_lens = torch.tensor([3, 5], device=device)
    with case("MultiHeadAttention(8, 2, dropout=0.5) en modo eval"):
        mha_forward_case(model, weights, num_heads, queries, keys, values, valid_lens)
        first, second = (expect_tensor(model(queries, keys, values, valid_lens), name="MultiHeadAttention(...)(...)",
                                       shape=(2, 4, D), device=device) for _ in range(2))
        if not torch.equal(first, second):
            raise CheckFailure("En modo `eval`, `MultiHeadAttention` dio resultados distintos para las mismas "
                               "entradas. Pista: usa `nn.Dropout`, que en `eval` no hace nada.")


# --------------------------------------------------------------------------- 8. positional encoding

@pytest.mark.grade_id("positional")
@pytest.mark.points(1)
def test_positional_encoding_table(student, device, rng):
    """¿El *buffer* `P` de `PositionalEncoding` es la tabla de senos y cosenos de d2l, en float32?"""
    for num_hiddens, max_len in ((2 * size(rng, 2, 16), 1000), (2 * size(rng, 1, 8), size(rng, 5, 60))):
        with case(f"PositionalEncoding({num_hiddens}, 0.0, max_len={max_len})"):
            positional_buffer(student, num_hiddens, max_len, device)


@pytest.mark.grade_id("positional")
@pytest.mark.points(1)
def test_positional_encoding_forward(student, device, rng):
    """¿`PositionalEncoding(...)(X)` suma `P[:, :T]` a `X` (y con `dropout=0.5` en modo `eval` no cambia nada)?"""
    num_hiddens, max_len = 2 * size(rng, 2, 8), size(rng, 20, 100)
    B, T = size(rng, 1, 3), size(rng, 2, 20)
    with case(f"PositionalEncoding({num_hiddens}, 0.0, max_len={max_len}) y X de forma {(B, T, num_hiddens)}"):
        positional_forward_case(student, rng, num_hiddens, max_len, B, T, device)
    with case(f"PositionalEncoding({num_hiddens}, 0.5, max_len={max_len}) en modo eval"):
        positional_forward_case(student, rng, num_hiddens, max_len, B, T, device, dropout=0.5, mode="eval")


# --------------------------------------------------------------------------- 9. transformer encoder block

@pytest.mark.grade_id("transformer")
@pytest.mark.points(2)
def test_transformer_block_matches_reference(student, device, rng):
    """¿`TransformerEncoderBlock` coincide con un bloque *post-norm* hecho con capas de torch?"""
    for use_bias in (False, True):
        num_heads = size(rng, 2, 3)
        D, ffn = num_heads * size(rng, 2, 4), size(rng, 4, 16)
        model, state = build_block(student, D, ffn, num_heads, use_bias, device)
        weights = load_random_weights(student, rng, model, state, device, "`TransformerEncoderBlock`")
        for form, mode in (("none", "train"), ("1d", "train"), ("1d", "eval")):
            B, T = size(rng, 1, 3), size(rng, 2, 6)
            X = randn(rng, B, T, D, device=device)
            valid_lens = random_valid_lens(rng, form, B, T, T, device)
            getattr(model, mode)()
            with case(f"TransformerEncoderBlock({D}, {ffn}, {num_heads}, use_bias={use_bias}) en modo {mode}, "
                      f"X de forma {(B, T, D)}, {describe_lens(valid_lens)}"):
                args = (X,) if valid_lens is None else (X, valid_lens)
                expect_close(model(*args), reference_block(weights, num_heads, X, valid_lens),
                             name="TransformerEncoderBlock(...)(X, valid_lens)", hint=BLOCK_HINT)


@pytest.mark.grade_id("transformer")
@pytest.mark.points(1)
def test_transformer_block_gradients_match_autograd(student, device, rng):
    """¿Los gradientes de `TransformerEncoderBlock` (entrada y parámetros) coinciden con los de la referencia?"""
    num_heads = 2
    D, ffn = 2 * size(rng, 2, 3), size(rng, 4, 10)
    model, state = build_block(student, D, ffn, num_heads, False, device)
    weights = load_random_weights(student, rng, model, state, device, "`TransformerEncoderBlock`")
    B, T = size(rng, 2, 3), size(rng, 3, 5)
    valid_lens = random_valid_lens(rng, "1d", B, T, T, device)
    with case(f"TransformerEncoderBlock({D}, {ffn}, {num_heads}), X de forma {(B, T, D)}, "
              f"{describe_lens(valid_lens)}"):
        block_gradient_case(student, rng, model, weights, num_heads, randn(rng, B, T, D, device=device), valid_lens)


@pytest.mark.grade_id("transformer")
@pytest.mark.points(1)
def test_transformer_block_dropout_is_off_in_eval(student, device, rng):
    """¿Con `dropout=0.5`, en modo `eval` `TransformerEncoderBlock` es determinista y da lo mismo que sin dropout?"""
    num_heads, D, ffn = 2, 8, 12
    model, state = build_block(student, D, ffn, num_heads, False, device, dropout=0.5)
    weights = load_random_weights(student, rng, model, state, device, "`TransformerEncoderBlock`")
    model.eval()
    X, valid_lens = randn(rng, 2, 5, D, device=device), torch.tensor([2, 5], device=device)
    with case("TransformerEncoderBlock(8, 12, 2, dropout=0.5) en modo eval"):
        first = expect_close(model(X, valid_lens), reference_block(weights, num_heads, X, valid_lens),
                             name="TransformerEncoderBlock(...)(X, valid_lens)", hint=BLOCK_HINT)
        second = expect_tensor(model(X, valid_lens), name="TransformerEncoderBlock(...)(X, valid_lens)",
                               shape=first.shape, dtype=first.dtype, device=device)
        if not torch.equal(second, first):
            raise CheckFailure("En modo `eval`, `TransformerEncoderBlock` dio resultados distintos para la misma "
                               "`X`. Pista: usa `nn.Dropout` (en `AddNorm` y en la atención), que en `eval` no hace "
                               "nada.")


# --------------------------------------------------------------------------- 10. sequence classifier

@pytest.mark.grade_id("classifier")
@pytest.mark.points(3)
@pytest.mark.time_limit(180)
def test_classifier_learns_ordered_markers(student, device, rng):
    """¿Un clasificador con tu `PositionalEncoding` y tu bloque acierta al menos el 75 % de las secuencias nuevas?"""
    model = build_classifier(student, rng, device)
    classifier_parameters(student, model)  # the layers are right before spending time on training
    X_test, y_test = ordered_markers(rng, CLS_TEST, vocab=CLS_VOCAB)  # never sent to the worker
    accuracies = train_classifier(student, rng, model, device, X_test, y_test)
    # The trained weights give the same logits in your modules and in the reference (on other fresh sequences).
    expect_classifier_matches_reference(model, classifier_parameters(student, model),
                                        ordered_markers(rng, 200, vocab=CLS_VOCAB)[0], device)
    if not max(accuracies) >= CLS_TARGET:
        shown = ", ".join(f"{100 * a:.1f} %" for a in accuracies)
        raise CheckFailure(
            f"Con los pesos que aprendió tu clasificador, el clasificador de referencia (tus pesos en capas de torch, "
            f"con la codificación posicional y el bloque *post-norm* de d2l) acierta {shown} de las secuencias nuevas "
            f"tras {CLS_STEPS - (CLS_CHECKPOINTS - 1) * CLS_CHUNK}, ..., {CLS_STEPS} pasos; se esperaba al menos el "
            f"{100 * CLS_TARGET:.0f} % en alguno (la solución pasa del 90 %). Pista: revisa `PositionalEncoding` y "
            "`TransformerEncoderBlock` con las comprobaciones de las partes 7, 8 y 9.")


# --------------------------------------------------------------------------- 11. BLEU

@pytest.mark.grade_id("bleu")
@pytest.mark.points(2)
def test_bleu_matches_d2l_formula(student, rng):
    """¿`bleu` coincide con la fórmula de d2l (precisiones recortadas y penalización por brevedad)?"""
    cases = [(size(rng, 3, 6), size(rng, 7, 10)),    # shorter prediction: the brevity penalty counts
             (size(rng, 7, 10), size(rng, 3, 6)),    # longer prediction: no penalty
             (size(rng, 4, 9), size(rng, 4, 9)), (size(rng, 4, 9), size(rng, 4, 9))]
    for pred_len, label_len in cases:
        pred, label = random_tokens(rng, pred_len, 3), random_tokens(rng, label_len, 3)
        bleu_case(student, pred, label, size(rng, 1, min(4, pred_len, label_len)))
    label = random_tokens(rng, size(rng, 6, 9), 4)
    bleu_case(student, label[:size(rng, 2, 4)], label, 2)  # a prefix of the label: only the penalty is below 1
    bleu_case(student, [label[0]] * 5, label, 1)  # one word repeated: the matches are clipped
