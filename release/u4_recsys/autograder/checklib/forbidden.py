"""The catalogue of torch built-ins that by-hand rules forbid (see `autograder.rules`).

Each entry names what the dispatcher executes when the built-in runs, on any device
(`ops`: aten overload packets, including the backends it may reach and its backward),
and the identifiers that betray it in the source (`names`). `tests/test_rules.py`
calls every public spelling of each built-in and proves its entry sees it. Units
declare their rules with these entries; new units add theirs here.
"""

from __future__ import annotations

from ..rules import Forbidden


def _names(*groups: str) -> frozenset[str]:
    return frozenset(name for group in groups for name in group.split())


AUTOGRAD = Forbidden(
    "autograd", "`.backward()`, `torch.autograd.grad`, `torch.func` ni ningún otro cálculo automático de gradientes",
    autograd=True,
    names=_names("autograd backward requires_grad_ enable_grad func functorch vjp jvp jacrev jacfwd jacobian "
                 "hessian grad_and_value"),
)

SOFTMAX = Forbidden(
    "`F.softmax`", "ni `torch.softmax`, `F.log_softmax` ni `nn.Softmax`",
    ops=_names("_softmax _log_softmax softmax log_softmax _safe_softmax _softmax_backward_data "
               "_log_softmax_backward_data special_softmax special_log_softmax _sparse_softmax _sparse_log_softmax "
               "_sparse_softmax_backward_data _sparse_log_softmax_backward_data _masked_softmax"),
    names=_names("softmax log_softmax softmin Softmax LogSoftmax Softmin Softmax2d"),
)

CROSS_ENTROPY = Forbidden(
    "`F.cross_entropy`", "ni `F.nll_loss` ni sus módulos",
    ops=_names("cross_entropy_loss nll_loss nll_loss_forward nll_loss_backward nll_loss2d nll_loss2d_forward "
               "nll_loss2d_backward nll_loss_nd"),
    names=_names("cross_entropy nll_loss CrossEntropyLoss NLLLoss"),
)

OPTIM = Forbidden(
    "`torch.optim`", "ni sus optimizadores `SGD`, `Adam`, ...",
    ops=_names("record_function:Optimizer.step record_function:Optimizer.zero_grad _fused_adam _fused_adam_ "
               "_fused_adamw _fused_adamw_ _fused_sgd _fused_sgd_ _fused_adagrad _fused_adagrad_"),
    names=_names("optim SGD Adam AdamW Adamax NAdam RAdam RMSprop Adagrad Adadelta"),
)

CDIST = Forbidden(
    "`torch.cdist`", "ni `torch.pdist`",
    ops=_names("cdist _cdist_forward _cdist_backward _euclidean_dist pdist _pdist_forward"),
    names=_names("cdist pdist _euclidean_dist"),
)

CONV = Forbidden(
    "`F.conv2d`", "ni `nn.Conv2d`, `F.conv_transpose2d`, `torch.nn.grad` ni otra convolución de torch o SciPy",
    ops=_names(
        "convolution _convolution convolution_overrideable _convolution_mode conv1d conv2d conv3d",
        "conv_transpose1d conv_transpose2d conv_transpose3d conv_tbc cudnn_convolution cudnn_convolution_transpose",
        "cudnn_convolution_relu cudnn_convolution_add_relu miopen_convolution miopen_depthwise_convolution",
        "miopen_convolution_transpose mkldnn_convolution _slow_conv2d_forward slow_conv3d slow_conv3d_forward",
        "slow_conv_dilated2d slow_conv_dilated3d slow_conv_transpose2d slow_conv_transpose3d thnn_conv2d",
        "_conv_depthwise2d conv_depthwise3d _nnpack_spatial_convolution convolution_backward",
        "convolution_backward_overrideable _mps_convolution _mps_convolution_transpose",
    ),
    names=_names("conv1d conv2d conv3d conv_transpose1d conv_transpose2d conv_transpose3d convolution conv_tbc",
                 "Conv1d Conv2d Conv3d ConvTranspose1d ConvTranspose2d ConvTranspose3d LazyConv2d",
                 "conv2d_input conv2d_weight correlate correlate2d convolve convolve2d fftconvolve oaconvolve"),
)

MAX_POOL = Forbidden(
    "`F.max_pool2d`", "ni `nn.MaxPool2d`, `F.adaptive_max_pool2d` ni `F.max_unpool2d`",
    ops=_names(
        "max_pool1d max_pool2d max_pool3d max_pool1d_with_indices max_pool2d_with_indices max_pool3d_with_indices",
        "max_pool2d_with_indices_backward max_pool3d_with_indices_backward max_pool2d_backward",
        "adaptive_max_pool1d adaptive_max_pool2d adaptive_max_pool3d adaptive_max_pool2d_backward",
        "adaptive_max_pool3d_backward fractional_max_pool2d fractional_max_pool3d fractional_max_pool2d_backward",
        "fractional_max_pool3d_backward max_unpool2d max_unpool3d mkldnn_max_pool2d mkldnn_max_pool3d",
        "quantized_max_pool1d quantized_max_pool2d quantized_max_pool3d _mps_max_pool2d",
    ),
    names=_names("max_pool1d max_pool2d max_pool3d max_pool2d_with_indices MaxPool1d MaxPool2d MaxPool3d",
                 "adaptive_max_pool1d adaptive_max_pool2d adaptive_max_pool3d AdaptiveMaxPool2d",
                 "max_unpool2d max_unpool3d MaxUnpool2d fractional_max_pool2d FractionalMaxPool2d"),
)

BATCH_NORM = Forbidden(
    "`F.batch_norm`", "ni `nn.BatchNorm2d` ni las otras normalizaciones de torch: `F.layer_norm`, `F.group_norm`, "
                      "`F.instance_norm`, `F.rms_norm`",
    ops=_names(
        "batch_norm native_batch_norm _native_batch_norm_legit _native_batch_norm_legit_no_training",
        "_native_batch_norm_legit_functional _batch_norm_impl_index _batch_norm_with_update",
        "_batch_norm_with_update_functional _batch_norm_no_update cudnn_batch_norm miopen_batch_norm",
        "native_batch_norm_backward batch_norm_backward cudnn_batch_norm_backward miopen_batch_norm_backward",
        "_batch_norm_impl_index_backward batch_norm_stats batch_norm_elemt batch_norm_gather_stats",
        "batch_norm_gather_stats_with_counts batch_norm_backward_reduce batch_norm_backward_elemt",
        "batch_norm_update_stats instance_norm layer_norm native_layer_norm native_layer_norm_backward",
        "group_norm native_group_norm native_group_norm_backward rms_norm _fused_rms_norm _fused_rms_norm_backward",
    ),
    names=_names("batch_norm BatchNorm1d BatchNorm2d BatchNorm3d LazyBatchNorm2d SyncBatchNorm instance_norm",
                 "InstanceNorm1d InstanceNorm2d InstanceNorm3d layer_norm LayerNorm group_norm GroupNorm",
                 "rms_norm RMSNorm native_batch_norm native_layer_norm"),
)

# Recurrent layers reach the dispatcher as ordinary matrix products on CPU: their functions are recorded too.
_RECURRENT_OPS = _names(
    "rnn_tanh rnn_relu rnn_tanh_cell rnn_relu_cell lstm lstm_cell gru gru_cell _thnn_fused_lstm_cell",
    "_thnn_fused_gru_cell _thnn_fused_lstm_cell_backward_impl _thnn_fused_gru_cell_backward cudnn_rnn _cudnn_rnn",
    "_cudnn_rnn_backward miopen_rnn miopen_rnn_backward mkldnn_rnn_layer mkldnn_rnn_layer_backward",
    "quantized_lstm_cell quantized_gru_cell quantized_rnn_tanh_cell quantized_rnn_relu_cell",
)
_RECURRENT_FUNCTIONS = frozenset({"torch/nn/modules/rnn.py"}) | frozenset(
    f"torch.{name}" for name in ("rnn_tanh", "rnn_relu", "rnn_tanh_cell", "rnn_relu_cell", "lstm", "lstm_cell",
                                 "gru", "gru_cell", "_thnn_fused_lstm_cell", "_thnn_fused_gru_cell"))
_RECURRENT_NAMES = _names("RNN RNNCell RNNBase LSTM LSTMCell GRU GRUCell rnn_tanh rnn_relu rnn_tanh_cell",
                          "rnn_relu_cell lstm_cell gru_cell")

RNN_LAYERS = Forbidden(
    "`nn.RNN`", "ni `nn.RNNCell`, `nn.LSTM`, `nn.GRU` ni las funciones recurrentes de torch (`torch.rnn_tanh`, ...)",
    ops=_RECURRENT_OPS, functions=_RECURRENT_FUNCTIONS, names=_RECURRENT_NAMES,
)

LSTM_LAYERS = Forbidden(
    "`nn.LSTMCell`", "ni `nn.LSTM`, las otras capas recurrentes ni `torch.lstm_cell`",
    ops=_RECURRENT_OPS, functions=_RECURRENT_FUNCTIONS, names=_RECURRENT_NAMES,
)

CLIP_GRAD = Forbidden(
    "`clip_grad_norm_`", "ni `clip_grad_value_` ni las otras funciones de `torch.nn.utils.clip_grad`",
    ops=_names("_foreach_norm"),
    functions=frozenset({"torch/nn/utils/clip_grad.py"}),
    names=_names("clip_grad_norm_ clip_grad_norm clip_grad_value_ clip_grads_with_norm_ get_total_norm clip_grad"),
)

_SDPA_OPS = _names(
    "scaled_dot_product_attention _scaled_dot_product_attention_math _scaled_dot_product_attention_math_for_mps",
    "_scaled_dot_product_flash_attention _scaled_dot_product_flash_attention_for_cpu",
    "_scaled_dot_product_flash_attention_backward _scaled_dot_product_flash_attention_for_cpu_backward",
    "_scaled_dot_product_efficient_attention _scaled_dot_product_efficient_attention_backward",
    "_scaled_dot_product_cudnn_attention _scaled_dot_product_cudnn_attention_backward",
    "_scaled_dot_product_fused_attention_overrideable _scaled_dot_product_fused_attention_overrideable_backward",
    "_fused_sdp_choice _efficient_attention_forward _efficient_attention_backward _flash_attention_forward",
    "_flash_attention_backward _native_multi_head_attention _transformer_encoder_layer_fwd _safe_softmax",
)

SDPA = Forbidden(
    "`F.scaled_dot_product_attention`", "ni `nn.MultiheadAttention` ni `F.multi_head_attention_forward`",
    ops=_SDPA_OPS,
    functions=frozenset({"torch/nn/modules/activation.py:MultiheadAttention.forward",
                         "torch/nn/functional.py:multi_head_attention_forward", "torch.scaled_dot_product_attention"}),
    names=_names("scaled_dot_product_attention MultiheadAttention multi_head_attention_forward"),
)

MULTIHEAD = Forbidden(
    "`nn.MultiheadAttention`", "ni `F.multi_head_attention_forward` ni `F.scaled_dot_product_attention`",
    ops=SDPA.ops, functions=SDPA.functions, names=SDPA.names,
)

TRANSFORMER_LAYERS = Forbidden(
    "`nn.TransformerEncoderLayer`", "ni `nn.TransformerEncoder`, `nn.Transformer`, `nn.MultiheadAttention` ni "
                                    "`F.scaled_dot_product_attention`",
    ops=SDPA.ops, functions=SDPA.functions | frozenset({"torch/nn/modules/transformer.py"}),
    names=SDPA.names | _names("Transformer TransformerEncoder TransformerEncoderLayer TransformerDecoder",
                              "TransformerDecoderLayer"),
)

# The log-sigmoid and the ranking losses of torch: the margin losses decompose into plain operations, so their
# functions are recorded too.
RANKING_LOSSES = Forbidden(
    "`F.logsigmoid`", "ni `F.softplus`, `F.binary_cross_entropy_with_logits`, `F.soft_margin_loss`, "
                      "`F.margin_ranking_loss`, `F.multi_margin_loss` ni sus módulos",
    ops=_names("log_sigmoid log_sigmoid_forward log_sigmoid_backward softplus softplus_backward binary_cross_entropy",
               "binary_cross_entropy_backward binary_cross_entropy_with_logits soft_margin_loss",
               "soft_margin_loss_backward margin_ranking_loss hinge_embedding_loss multi_margin_loss",
               "multi_margin_loss_backward multilabel_margin_loss multilabel_margin_loss_forward",
               "multilabel_margin_loss_backward"),
    functions=frozenset({"torch/nn/functional.py:margin_ranking_loss", "torch/nn/functional.py:hinge_embedding_loss",
                         "torch/nn/modules/loss.py:MarginRankingLoss.forward",
                         "torch/nn/modules/loss.py:HingeEmbeddingLoss.forward",
                         "torch.margin_ranking_loss", "torch.hinge_embedding_loss"}),
    names=_names("logsigmoid log_sigmoid LogSigmoid softplus Softplus binary_cross_entropy",
                 "binary_cross_entropy_with_logits BCELoss BCEWithLogitsLoss soft_margin_loss SoftMarginLoss",
                 "margin_ranking_loss MarginRankingLoss hinge_embedding_loss HingeEmbeddingLoss multi_margin_loss",
                 "MultiMarginLoss multilabel_margin_loss MultiLabelMarginLoss"),
)
