"""Hidden checks of Unit 3: edge cases, gradients in corner cases, the first training steps replayed exactly, and
the classifier against its reference before training."""

import pytest
import torch

from autograder.checklib import expect_close, expect_sequence, expect_tensor, randn
from autograder.checklib.text import ordered_markers, spanish_text
from autograder.checks.u3_attention.common import (
    BLOCK_HINT, CLS_VOCAB, LM_VOCAB, PE_ATOL, attention_case, attention_gradient_case, attention_inputs, bleu_case,
    block_gradient_case, build_block, build_classifier, build_multihead, case, classifier_parameters, clip_case,
    expect_classifier_matches_reference, expect_dropout_active, expect_module, global_norm, load_random_weights,
    lstm_forward_case, lstm_gradient_case, lstm_inputs, masked_softmax_case, mha_forward_case, mha_gradient_case,
    positional_buffer, positional_forward_case, reference_block, reference_char_lm, reference_positional,
    residual_only_block, rnn_forward_case, rnn_gradient_case, rnn_inputs, scaled_to_norm, train_char_lm,
)
from autograder.errors import CheckFailure

pytestmark = pytest.mark.hidden


# --------------------------------------------------------------------------- 1. RNN

RNN_EDGE_CASES = [  # T, N, D, H, scale
    (1, 2, 3, 4, 1.0),    # one time step
    (5, 1, 2, 3, 1.0),    # batch 1
    (4, 3, 1, 1, 1.0),    # one input feature, one hidden unit
    (12, 2, 3, 5, 3.0),   # a long sequence with large weights (tanh saturates)
    (3, 2, 7, 2, 1.0),    # more inputs than hidden units
]


@pytest.mark.grade_id("rnn")
@pytest.mark.points(1)
def test_rnn_forward_edge_cases(student, device, rng):
    """¿`rnn_forward` acierta con un solo paso, lote de 1, una sola unidad y secuencias largas que saturan?"""
    for i, (T, N, D, H, scale) in enumerate(RNN_EDGE_CASES):
        with case(f"caso borde {i + 1}"):
            rnn_forward_case(student, rnn_inputs(rng, T, N, D, H, device, scale=scale))


@pytest.mark.grade_id("rnn")
@pytest.mark.points(1)
def test_rnn_gradient_edge_cases(student, device, rng):
    """¿La retropropagación de `rnn_forward` acierta con un paso, lote de 1, secuencias largas y otras pérdidas?"""
    losses = [(True, True), (True, False), (False, True), (True, True), (False, True)]  # on outputs, on h_last
    for i, ((T, N, D, H, scale), (on_outputs, on_last)) in enumerate(zip(RNN_EDGE_CASES, losses)):
        with case(f"caso borde {i + 1}"):
            rnn_gradient_case(student, rng, rnn_inputs(rng, T, N, D, H, device, scale=scale),
                              outputs_cotangent=on_outputs, last_cotangent=on_last)


# --------------------------------------------------------------------------- 2. LSTM

LSTM_EDGE_CASES = [  # N, D, H, scale
    (1, 3, 2, 1.0),   # batch 1
    (3, 1, 1, 1.0),   # one input feature, one hidden unit
    (2, 4, 3, 4.0),   # large pre-activations: the gates saturate
    (4, 6, 2, 1.0),   # more inputs than hidden units
]


@pytest.mark.grade_id("lstm")
@pytest.mark.points(1)
def test_lstm_cell_edge_cases(student, device, rng):
    """¿`lstm_cell` acierta con lote de 1, una sola unidad, compuertas saturadas y varios pasos encadenados?"""
    for i, (N, D, H, scale) in enumerate(LSTM_EDGE_CASES):
        with case(f"caso borde {i + 1}"):
            lstm_forward_case(student, lstm_inputs(rng, N, D, H, device, scale=scale))
    # Five steps, each fed with the student's own state: errors would compound.
    x, h, c, W_x, W_h, b = lstm_inputs(rng, 2, 3, 4, device)
    for step in range(5):
        with case(f"paso {step + 1} de una secuencia"):
            lstm_forward_case(student, [x, h, c, W_x, W_h, b])
            h, c = expect_sequence(student.lstm_cell(x, h, c, W_x, W_h, b), 2, name="lstm_cell",
                                   what="`(h_new, c_new)`")
            x = randn(rng, 2, 3, device=device)


@pytest.mark.grade_id("lstm")
@pytest.mark.points(1)
def test_lstm_cell_gradient_edge_cases(student, device, rng):
    """¿Los gradientes de `lstm_cell` aciertan con lote de 1, compuertas saturadas y otras pérdidas?"""
    for i, (N, D, H, scale) in enumerate(LSTM_EDGE_CASES):
        with case(f"caso borde {i + 1}"):
            lstm_gradient_case(student, rng, lstm_inputs(rng, N, D, H, device, scale=scale),
                               h_cotangent=i != 1, c_cotangent=i != 2)


# --------------------------------------------------------------------------- 3. gradient clipping

@pytest.mark.grade_id("clipping")
@pytest.mark.points(1)
def test_clip_gradients_edge_cases(student, device, rng):
    """¿`clip_gradients` acierta con un solo gradiente, tensores de un elemento, gradientes nulos o diminutos, un $\\theta$ muy chico, una norma menor que 1 pero mayor que $\\theta$ y float32?"""
    single = [randn(rng, 4, 3, device=device, scale=2.0)]
    cases = [
        ("un solo gradiente por encima de theta", single, global_norm(single) / 4),
        ("un solo gradiente por debajo de theta", single, global_norm(single) * 1.5),
        ("gradientes de un elemento", [randn(rng, 1, device=device) + 3, randn(rng, 1, 1, device=device) - 3], 1.0),
        ("theta muy chico", [randn(rng, 5, device=device), randn(rng, 2, 3, 4, device=device)], 1e-3),
        ("todos los gradientes nulos (norma 0)", [torch.zeros(3, 2, dtype=torch.float64, device=device),
                                                  torch.zeros(4, dtype=torch.float64, device=device)], 1.0),
        # far under theta, so nothing changes (a guard against dividing by 0 must not bite a tiny norm)
        ("gradientes diminutos (norma cerca de 1e-14)", [1e-14 * randn(rng, 3, 2, device=device),
                                                        1e-14 * randn(rng, 4, device=device)], 1.0),
        # under 1 yet over theta: a guard such as `norm > 1` must not skip the clipping
        ("norma total menor que 1 pero mayor que theta", scaled_to_norm(
            [randn(rng, 3, 3, device=device), randn(rng, 5, device=device)], 0.3), 0.1),
        ("gradientes en float32", [randn(rng, 6, 4, device=device, dtype=torch.float32),
                                   randn(rng, 4, device=device, dtype=torch.float32)], 0.5),
    ]
    for description, grads, theta in cases:
        with case(description):
            clip_case(student, grads, theta)


# --------------------------------------------------------------------------- 4. character language model

@pytest.mark.grade_id("language_model")
@pytest.mark.points(2)
@pytest.mark.time_limit(120)
def test_char_lm_first_steps_match_reference(student, device, rng):
    """¿Los primeros pasos de entrenamiento dan los mismos pesos que con `nn.LSTMCell` y `clip_grad_norm_`?"""
    corpus = LM_VOCAB.encode(spanish_text(rng, 40)).to(device)
    seed = int(torch.randint(0, 2**31, (1,), generator=rng))
    settings = {"hidden": 16, "steps": 8, "seq_len": 10, "batch_size": 6, "lr": 2.0, "theta": 0.2, "seed": seed}
    result = train_char_lm(student, corpus, **settings)  # theta 0.2: the gradients are clipped at every step
    expected = reference_char_lm(corpus, **settings)
    for name, value in expected["state"].items():  # float32: correct versions stay within 3e-6 of the reference
        expect_close(result["state"][name], value, name=name, rtol=1e-4,
                     hint="tras unos pasos de entrenamiento, los pesos del modelo de lenguaje no son los de la "
                          "referencia. Cada paso usa tu `lstm_cell` hacia adelante, autograd hacia atrás y tu "
                          "`clip_gradients` (con la norma de todos los gradientes juntos); revisa las dos con las "
                          "comprobaciones de las partes 2 y 3.")


# --------------------------------------------------------------------------- 5. masked softmax

@pytest.mark.grade_id("masked_softmax")
@pytest.mark.points(1)
def test_masked_softmax_edge_cases(student, device, rng):
    """¿`masked_softmax` es estable con puntajes grandes y acierta en los casos borde?"""
    cases = [
        ("puntajes del orden de 1000", randn(rng, 2, 3, 5, device=device, scale=1000.0), torch.tensor([2, 5])),
        ("puntajes grandes en float32", randn(rng, 2, 3, 6, device=device, scale=60.0, dtype=torch.float32),
         torch.tensor([[1, 3, 6], [2, 2, 4]])),
        ("una sola clave válida", randn(rng, 3, 2, 4, device=device), torch.tensor([1, 1, 1])),
        ("todas las claves válidas", randn(rng, 2, 3, 4, device=device), torch.tensor([4, 4])),
        ("lote de 1 y una consulta", randn(rng, 1, 1, 5, device=device), torch.tensor([3])),
        ("una sola clave", randn(rng, 2, 3, 1, device=device), torch.tensor([[1, 1, 1], [1, 1, 1]])),
    ]
    for description, X, valid_lens in cases:
        with case(description):
            masked_softmax_case(student, X, valid_lens.to(device))


# --------------------------------------------------------------------------- 6. scaled dot-product attention

@pytest.mark.grade_id("attention")
@pytest.mark.points(1)
def test_attention_edge_cases(student, device, rng):
    """¿`scaled_dot_product_attention` acierta con lote de 1, una consulta, una clave, puntajes grandes y float32?"""
    cases = [  # B, Q, K, d, v, valid_lens form or a fixed tensor, scale, dtype
        (1, 4, 3, 5, 2, "1d", 1.0, torch.float64),
        (2, 1, 5, 3, 4, "2d", 1.0, torch.float64),
        (2, 3, 1, 4, 3, "none", 1.0, torch.float64),
        (3, 2, 4, 6, 1, torch.tensor([1, 1, 1]), 1.0, torch.float64),
        (2, 5, 3, 2, 3, torch.tensor([[3, 3, 3, 3, 3], [1, 2, 3, 1, 2]]), 1.0, torch.float64),
        (2, 3, 4, 8, 5, "1d", 6.0, torch.float64),
        (2, 3, 4, 8, 5, "2d", 1.0, torch.float32),
    ]
    for i, (B, Q, K, d, v, lens, scale, dtype) in enumerate(cases):
        inputs = attention_inputs(rng, B, Q, K, d, v, device, scale=scale, dtype=dtype)
        valid_lens = lens.to(device) if isinstance(lens, torch.Tensor) else \
            (None if lens == "none" else torch.randint(1, K + 1, (B,) if lens == "1d" else (B, Q),
                                                       generator=rng).to(device))
        with case(f"caso borde {i + 1}"):
            attention_case(student, *inputs, valid_lens)


@pytest.mark.grade_id("attention")
@pytest.mark.points(1)
def test_attention_gradients(student, device, rng):
    """¿Los gradientes de `scaled_dot_product_attention` coinciden con los de `F.scaled_dot_product_attention`?"""
    for i, (B, Q, K, d, v, lens) in enumerate([(2, 3, 4, 5, 2, None), (2, 4, 5, 3, 6, "1d"), (1, 2, 4, 2, 3, "2d")]):
        valid_lens = None if lens is None else torch.randint(1, K + 1, (B,) if lens == "1d" else (B, Q),
                                                             generator=rng).to(device)
        with case(f"caso {i + 1}"):
            attention_gradient_case(student, rng, attention_inputs(rng, B, Q, K, d, v, device), valid_lens)


# --------------------------------------------------------------------------- 7. multi-head attention

MHA_EDGE_CASES = [  # D, heads, bias, B, Q, K, valid_lens
    (6, 1, True, 2, 3, 4, [2, 4]),          # one head
    (4, 4, False, 2, 3, 5, [5, 1]),         # heads of size 1
    (8, 2, True, 1, 1, 1, [1]),             # batch 1, one query, one key
    (6, 3, False, 3, 4, 2, [1, 1, 2]),      # fewer keys than queries, a single valid key
    (8, 4, True, 2, 5, 3, None),            # bias, no mask
]


@pytest.mark.grade_id("multihead")
@pytest.mark.points(1)
def test_multihead_edge_cases(student, device, rng):
    """¿`MultiHeadAttention` acierta con una cabeza, cabezas de tamaño 1, lote de 1, una clave y autoatención?"""
    for i, (D, num_heads, bias, B, Q, K, lens) in enumerate(MHA_EDGE_CASES):
        model, state = build_multihead(student, D, num_heads, bias, device)
        weights = load_random_weights(student, rng, model, state, device, "`MultiHeadAttention`")
        queries, keys, values = attention_inputs(rng, B, Q, K, D, D, device)
        valid_lens = None if lens is None else torch.tensor(lens, device=device)
        with case(f"caso borde {i + 1}"):
            mha_forward_case(model, weights, num_heads, queries, keys, values, valid_lens)
        with case(f"caso borde {i + 1}, autoatención"):
            mha_forward_case(model, weights, num_heads, queries, queries, queries,
                             None if lens is None else torch.tensor(lens, device=device).clamp(max=Q))


@pytest.mark.grade_id("multihead")
@pytest.mark.points(1)
def test_multihead_gradient_edge_cases(student, device, rng):
    """¿Los gradientes de `MultiHeadAttention` aciertan con sesgo, una cabeza, cabezas de tamaño 1 y lote de 1?"""
    for i, (D, num_heads, bias, B, Q, K, lens) in enumerate(MHA_EDGE_CASES[:3] + MHA_EDGE_CASES[4:]):
        model, state = build_multihead(student, D, num_heads, bias, device)
        weights = load_random_weights(student, rng, model, state, device, "`MultiHeadAttention`")
        valid_lens = None if lens is None else torch.tensor(lens, device=device)
        with case(f"caso borde {i + 1}"):
            mha_gradient_case(student, rng, model, weights, num_heads, attention_inputs(rng, B, Q, K, D, D, device),
                              valid_lens)


# --------------------------------------------------------------------------- 8. positional encoding

@pytest.mark.grade_id("positional")
@pytest.mark.points(1)
def test_positional_encoding_edge_cases(student, device, rng):
    """¿`PositionalEncoding` acierta en los casos borde y aplica el dropout a la suma al entrenar?"""
    with case("caso borde 1"):
        positional_buffer(student, 2, 50, device)
    with case("caso borde 2"):
        positional_buffer(student, 256, 1000, device)
    with case("caso borde 3"):
        positional_forward_case(student, rng, 10, 30, 1, 30, device)  # T = max_len
    with case("caso borde 4"):
        positional_forward_case(student, rng, 12, 1000, 2, 1, device)  # one step
    with case("caso borde 5"):
        model = expect_module(student.PositionalEncoding(16, 0.5, 100), name="PositionalEncoding(16, 0.5, 100)")
        model.to(device)
        model.train()
        X = randn(rng, 8, 40, 16, device=device, dtype=torch.float32)
        out = expect_tensor(model(X), name="PositionalEncoding(...)(X)", shape=X.shape, dtype=torch.float32,
                            device=device).double()
        full = (X.double() + reference_positional(100, 16, device)[:, :40]) / 0.5  # kept entries, rescaled
        dropped = out == 0
        kept_ok = bool(((out - full).abs() <= 2 * PE_ATOL + 1e-5 * full.abs()).logical_or(dropped).all())
        fraction = float(dropped.double().mean())
        if not kept_ok or not 0.35 <= fraction <= 0.65:
            raise CheckFailure(
                "En modo `train` con `dropout=0.5`, la salida de `PositionalEncoding` debe ser `dropout(X + P[:, :T])`:"
                " cada valor es 0 o $(X + P)/(1 - p)$. Pista: aplica `self.dropout` a la suma, no solo a `P` ni a `X`.",
                detail=f"Fracción de ceros: {fraction:.2f}.")


# --------------------------------------------------------------------------- 9. transformer encoder block

BLOCK_EDGE_CASES = [  # D, ffn, heads, use_bias, B, T, valid_lens, mode
    (6, 8, 1, True, 2, 4, [1, 4], "train"),      # one head, bias
    (4, 6, 4, False, 2, 3, None, "eval"),        # heads of size 1
    (8, 16, 2, True, 1, 1, [1], "train"),        # batch 1, one position
    (6, 5, 3, False, 3, 5, [5, 2, 1], "eval"),   # a narrow feed-forward layer
]


@pytest.mark.grade_id("transformer")
@pytest.mark.points(1)
def test_transformer_block_edge_cases(student, device, rng):
    """¿`TransformerEncoderBlock` acierta con una sola cabeza, cabezas de tamaño 1, lote de 1, una posición y dropout?"""
    for i, (D, ffn, num_heads, use_bias, B, T, lens, mode) in enumerate(BLOCK_EDGE_CASES):
        model, state = build_block(student, D, ffn, num_heads, use_bias, device)
        weights = load_random_weights(student, rng, model, state, device, "`TransformerEncoderBlock`")
        getattr(model, mode)()
        X = randn(rng, B, T, D, device=device)
        valid_lens = None if lens is None else torch.tensor(lens, device=device)
        with case(f"caso borde {i + 1}"):
            args = (X,) if valid_lens is None else (X, valid_lens)
            expect_close(model(*args), reference_block(weights, num_heads, X, valid_lens),
                         name="TransformerEncoderBlock(...)(X, valid_lens)", hint=BLOCK_HINT)
    model, _ = build_block(student, 8, 12, 2, False, device, dropout=0.5)
    with case("dropout=0.5 en modo train"):
        expect_dropout_active(model, (randn(rng, 2, 5, 8, device=device),), name="TransformerEncoderBlock(...)(X)",
                              shape=(2, 5, 8), device=device)
    model, state = build_block(student, 8, 12, 2, False, device, dropout=1.0)
    weights = load_random_weights(student, rng, model, state, device, "`TransformerEncoderBlock`")
    with case("dropout=1 en modo train: cada subcapa se anula y la rama residual pasa entera"):
        model.train()
        X = randn(rng, 2, 5, 8, device=device)
        expect_close(model(X), residual_only_block(weights, X), name="TransformerEncoderBlock(...)(X)",
                     hint="con `dropout=1` la salida de cada subcapa se anula, y el bloque debe dar "
                          "$\\mathrm{LN}_2(\\mathrm{LN}_1(\\mathbf{X}))$: el *dropout* va sobre la salida de cada "
                          "subcapa y nunca sobre la rama residual, "
                          "$\\mathrm{LN}(\\mathbf{X} + \\mathrm{dropout}(\\mathrm{subcapa}(\\mathbf{X})))$.")


@pytest.mark.grade_id("transformer")
@pytest.mark.points(1)
def test_transformer_block_gradient_edge_cases(student, device, rng):
    """¿Los gradientes de `TransformerEncoderBlock` aciertan con sesgo en la atención, una sola cabeza y lote de 1?"""
    for i, (D, ffn, num_heads, use_bias, B, T, lens, _) in enumerate(BLOCK_EDGE_CASES[:1] + BLOCK_EDGE_CASES[2:3]
                                                                     + BLOCK_EDGE_CASES[3:]):
        model, state = build_block(student, D, ffn, num_heads, use_bias, device)
        weights = load_random_weights(student, rng, model, state, device, "`TransformerEncoderBlock`")
        valid_lens = None if lens is None else torch.tensor(lens, device=device)
        with case(f"caso borde {i + 1}"):
            block_gradient_case(student, rng, model, weights, num_heads, randn(rng, B, T, D, device=device),
                                valid_lens)


# --------------------------------------------------------------------------- 10. sequence classifier

@pytest.mark.grade_id("classifier")
@pytest.mark.points(1)
def test_classifier_matches_reference(student, device, rng):
    """¿El clasificador hecho con tus módulos calcula lo mismo que el de referencia con los mismos pesos?"""
    model = build_classifier(student, rng, device)
    params = classifier_parameters(student, model)
    expect_classifier_matches_reference(model, params, ordered_markers(rng, 64, vocab=CLS_VOCAB)[0], device)


# --------------------------------------------------------------------------- 11. BLEU

@pytest.mark.grade_id("bleu")
@pytest.mark.points(1)
def test_bleu_edge_cases(student, rng):
    """¿`bleu` acierta con predicciones idénticas, sin coincidencias, muy repetidas y con $k$ máximo?"""
    label = ["el", "gato", "come", "pan", "en", "la", "mesa"]
    cases = [
        (list(label), label, 4),                                    # identical: 1
        (["luna", "sol", "mar"], label, 2),                         # nothing in common: 0
        (["el"] * 6, ["el", "gato"], 1),                            # clipping: only one "el" counts
        (["el", "el", "gato", "el", "gato"], ["el", "gato", "el"], 2),
        (label[:3], label, 3),                                      # k = len(pred), brevity penalty
        (label + ["y", "el", "gato"], label, 3),                    # longer prediction, repeated bigram
        (["pan"], ["pan"], 1),                                      # one token
    ]
    for pred, ref, k in cases:
        bleu_case(student, pred, ref, k)
