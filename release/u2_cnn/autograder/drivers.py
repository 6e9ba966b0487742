"""Trusted routines that run next to the student's code, for checks on `nn.Module`s.

Autograd graphs and optimizers cannot cross the boundary: only plain values do. A
check that needs to train a student's module, or read its gradients, asks the
worker to run one of the functions of `DRIVERS` by name (`remote.drive`); its
arguments and result travel through the codec like any call's.

These functions live in the engine package, which the worker imports, but they
call the student's code (a module's `forward`, its `parameters()`) and the worker
may have replaced them: nothing they return is trusted. Checks verify every
result in their own process, e.g. by loading returned weights into a reference
built from torch layers and measuring accuracy on data the worker never saw.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn


def module_state(model: nn.Module) -> dict:
    """Parameters (and whether each trains) and buffers, as plain detached tensors, in registration order."""
    parameters = dict(model.named_parameters())
    return {
        "parameters": {name: p.detach().clone() for name, p in parameters.items()},
        "trainable": {name: bool(p.requires_grad) for name, p in parameters.items()},
        "buffers": {name: b.detach().clone() for name, b in model.named_buffers()},
    }


def trainable_parameters(model: nn.Module) -> dict:
    """{name: requires_grad} for every parameter, without their values (cheap for big models)."""
    return {name: bool(p.requires_grad) for name, p in model.named_parameters()}


def load_module_state(model: nn.Module, state: dict) -> None:
    """`model.load_state_dict(state, strict=True)`: the values are copied into the existing tensors. Buffers
    registered with `persistent=False` (which `module_state` reports but `state_dict` leaves out) are skipped."""
    transient = {name for name, _ in model.named_buffers()} - set(model.state_dict())
    model.load_state_dict({k: v for k, v in state.items() if k not in transient}, strict=True)


def forward_backward(model: nn.Module, x: torch.Tensor, dout: torch.Tensor) -> dict:
    """`out = model(x)`, then `out.backward(dout)`: the output, dL/dx and every parameter's gradient."""
    x = x.detach().requires_grad_()
    model.zero_grad(set_to_none=True)
    out = model(x)
    out.backward(dout)
    return {
        "out": out.detach(),
        "dx": None if x.grad is None else x.grad.detach(),
        "grads": {name: None if p.grad is None else p.grad.detach().clone()
                  for name, p in model.named_parameters()},
    }


class Trainer:
    """A model, its training data and an optimizer over the parameters that require grad."""

    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, optimizer: str, lr: float) -> None:
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise ValueError("el modelo no tiene parámetros entrenables (todos tienen requires_grad=False)")
        optimizers = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD}
        self.model, self.x, self.y = model, x, y
        self.optimizer = optimizers[optimizer](params, lr=lr)

    def steps(self, count: int, batch_size: int, seed: int) -> list[float]:
        """`count` steps of minibatch training with cross-entropy, in train mode; the losses."""
        self.model.train()
        order = torch.Generator().manual_seed(seed)
        losses = []
        for _ in range(count):
            idx = torch.randint(0, len(self.y), (batch_size,), generator=order).to(self.y.device)
            loss = F.cross_entropy(self.model(self.x[idx]), self.y[idx])
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            losses.append(float(loss.detach()))
        return losses


def make_trainer(model: nn.Module, x: torch.Tensor, y: torch.Tensor, optimizer: str, lr: float) -> Trainer:
    """A `Trainer` that stays in the worker (the check gets a ref and calls `train_steps` in chunks)."""
    return Trainer(model, x, y, optimizer, lr)


def train_steps(trainer: Trainer, count: int, batch_size: int, seed: int) -> list[float]:
    if type(trainer) is not Trainer:
        raise TypeError("train_steps needs a Trainer made by make_trainer")
    return trainer.steps(count, batch_size, seed)


def build_small_resnet(num_classes: int, state: dict | None) -> nn.Module:
    """The course's small torchvision ResNet, with `state` loaded when given (the pretrained checkpoint)."""
    from .checklib.models import small_resnet

    model = small_resnet(num_classes)
    if state is not None:
        model.load_state_dict(state, strict=True)
    return model


def build_resnet18(num_classes: int) -> nn.Module:
    """torchvision's ResNet-18 with random weights (never downloads anything)."""
    from torchvision.models import resnet18

    return resnet18(weights=None, num_classes=num_classes)


def vjp(fn: Callable, args: list, wrt: list[int], cotangents: list, kwargs: dict | None = None) -> dict:
    """`outputs = fn(*args)`, then autograd of `sum(<output_i, cotangent_i>)` with respect to `args[i]` for i in
    `wrt` (the other arguments stay constant). `fn` is a student function or module; its outputs may be a
    tensor or a tuple of tensors, with `cotangents` one per output (None to leave one out).

    Returns the outputs (detached), the gradients of the `wrt` arguments, and, for a module, its parameters'.
    """
    args = list(args)
    for i in wrt:
        args[i] = args[i].detach().requires_grad_()
    if isinstance(fn, nn.Module):
        fn.zero_grad(set_to_none=True)
    outputs = fn(*args, **(kwargs or {}))
    flat = list(outputs) if isinstance(outputs, (tuple, list)) else [outputs]
    pairs = [(o, c) for o, c in zip(flat, cotangents) if c is not None]
    if len(cotangents) != len(flat):
        raise ValueError(f"se esperaban {len(cotangents)} salidas y hubo {len(flat)}")
    torch.autograd.backward([o for o, _ in pairs], [c for _, c in pairs])
    result = {"outputs": [o.detach() for o in flat],
              "grads": [None if args[i].grad is None else args[i].grad.detach() for i in wrt]}
    if isinstance(fn, nn.Module):
        result["parameter_grads"] = {name: None if p.grad is None else p.grad.detach().clone()
                                     for name, p in fn.named_parameters()}
    return result


class CharLM(nn.Module):
    """d2l's character-level language model around a student's `lstm_cell`: one-hot inputs, the cell's
    weights W_x (V, 4H), W_h (H, 4H), b (4H,) and an output layer W_hq (H, V), b_q (V,)."""

    def __init__(self, lstm_cell: Callable, vocab_size: int, hidden: int, generator: torch.Generator) -> None:
        super().__init__()
        self.lstm_cell, self.vocab_size, self.hidden = lstm_cell, vocab_size, hidden

        def normal(*shape: int) -> nn.Parameter:
            return nn.Parameter(0.1 * torch.randn(*shape, generator=generator))

        self.W_x, self.W_h, self.b = normal(vocab_size, 4 * hidden), normal(hidden, 4 * hidden), normal(4 * hidden)
        self.W_hq, self.b_q = normal(hidden, vocab_size), nn.Parameter(torch.zeros(vocab_size))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        # tokens (N, T) -> logits (N, T, V)
        N, T = tokens.shape
        h = c = torch.zeros(N, self.hidden, device=tokens.device)
        inputs = F.one_hot(tokens, self.vocab_size).float()
        logits = []
        for t in range(T):
            h, c = self.lstm_cell(inputs[:, t], h, c, self.W_x, self.W_h, self.b)
            logits.append(h @ self.W_hq + self.b_q)
        return torch.stack(logits, dim=1)


class CharLMTrainer:
    """`CharLM` trained with SGD on random windows of `corpus` (token ids): truncated backpropagation through
    time over each window, and the student's `clip_gradients` on every step. It stays in the worker: the check
    gets a ref and trains in chunks (`char_lm_steps`), so no single call runs long."""

    def __init__(self, lstm_cell: Callable, clip_gradients: Callable, corpus: torch.Tensor, vocab_size: int,
                 hidden: int, seq_len: int, batch_size: int, lr: float, theta: float, seed: int) -> None:
        self.generator = torch.Generator().manual_seed(seed)
        self.model = CharLM(lstm_cell, vocab_size, hidden, self.generator).to(corpus.device)
        self.clip_gradients, self.corpus, self.vocab_size = clip_gradients, corpus, vocab_size
        self.seq_len, self.batch_size, self.lr, self.theta = seq_len, batch_size, lr, theta

    def steps(self, count: int) -> list[float]:
        parameters = list(self.model.parameters())
        losses = []
        for _ in range(count):
            starts = torch.randint(0, len(self.corpus) - self.seq_len - 1, (self.batch_size,),
                                   generator=self.generator).tolist()
            window = torch.stack([self.corpus[s:s + self.seq_len + 1] for s in starts])  # (N, T + 1)
            logits = self.model(window[:, :-1])                                          # (N, T, V)
            loss = F.cross_entropy(logits.reshape(-1, self.vocab_size), window[:, 1:].reshape(-1))
            self.model.zero_grad(set_to_none=True)
            loss.backward()
            clipped = self.clip_gradients([p.grad for p in parameters], self.theta)
            if len(clipped) != len(parameters):
                raise ValueError("`clip_gradients` debe devolver un tensor por gradiente")
            with torch.no_grad():
                for p, g in zip(parameters, clipped):
                    p -= self.lr * g
            losses.append(float(loss.detach()))
        return losses


def make_char_lm_trainer(lstm_cell: Callable, clip_gradients: Callable, corpus: torch.Tensor, vocab_size: int,
                         hidden: int, seq_len: int, batch_size: int, lr: float, theta: float,
                         seed: int) -> CharLMTrainer:
    return CharLMTrainer(lstm_cell, clip_gradients, corpus, vocab_size, hidden, seq_len, batch_size, lr, theta, seed)


def char_lm_steps(trainer: CharLMTrainer, count: int) -> list[float]:
    if type(trainer) is not CharLMTrainer:
        raise TypeError("char_lm_steps needs a CharLMTrainer made by make_char_lm_trainer")
    return trainer.steps(count)


def char_lm_state(trainer: CharLMTrainer) -> dict:
    """The trained weights W_x, W_h, b, W_hq, b_q, as plain tensors."""
    if type(trainer) is not CharLMTrainer:
        raise TypeError("char_lm_state needs a CharLMTrainer made by make_char_lm_trainer")
    return {name: p.detach().clone() for name, p in trainer.model.named_parameters()}


class SequenceClassifier(nn.Module):
    """Embedding, the student's `PositionalEncoding` and `TransformerEncoderBlock`, mean over positions, linear."""

    def __init__(self, positional: type, block: type, vocab_size: int, num_hiddens: int, ffn_num_hiddens: int,
                 num_heads: int, num_classes: int) -> None:
        super().__init__()
        self.num_hiddens = num_hiddens
        self.embedding = nn.Embedding(vocab_size, num_hiddens)
        self.positional = positional(num_hiddens, 0.0)
        self.block = block(num_hiddens, ffn_num_hiddens, num_heads, 0.0)
        self.head = nn.Linear(num_hiddens, num_classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        # tokens (N, T) -> logits (N, num_classes); embeddings scaled by sqrt(d) as in d2l
        X = self.positional(self.embedding(tokens) * self.num_hiddens ** 0.5)
        return self.head(self.block(X).mean(dim=1))


def build_sequence_classifier(positional: type, block: type, vocab_size: int, num_hiddens: int,
                              ffn_num_hiddens: int, num_heads: int, num_classes: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return SequenceClassifier(positional, block, vocab_size, num_hiddens, ffn_num_hiddens, num_heads, num_classes)


DRIVERS: dict[str, Callable] = {
    fn.__name__: fn for fn in (
        module_state, trainable_parameters, load_module_state, forward_backward, make_trainer, train_steps,
        build_small_resnet, build_resnet18, vjp, make_char_lm_trainer, char_lm_steps, char_lm_state,
        build_sequence_classifier,
    )
}
