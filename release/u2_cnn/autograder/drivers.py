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
        self.order = torch.Generator().manual_seed(0)

    def steps(self, count: int, batch_size: int, seed: int | None) -> list[float]:
        """`count` steps of minibatch training with cross-entropy, in train mode; the losses. The minibatches are
        drawn from a generator seeded with `seed`, or, with None, from where the previous call left it (a chunk
        split in several calls draws the batches it would have drawn in one; a new trainer's starts at seed 0)."""
        self.model.train()
        if seed is not None:
            self.order = torch.Generator().manual_seed(seed)
        losses = []
        for _ in range(count):
            idx = torch.randint(0, len(self.y), (batch_size,), generator=self.order).to(self.y.device)
            loss = F.cross_entropy(self.model(self.x[idx]), self.y[idx])
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            losses.append(float(loss.detach()))
        return losses


def make_trainer(model: nn.Module, x: torch.Tensor, y: torch.Tensor, optimizer: str, lr: float) -> Trainer:
    """A `Trainer` that stays in the worker (the check gets a ref and calls `train_steps` in chunks)."""
    return Trainer(model, x, y, optimizer, lr)


def train_steps(trainer: Trainer, count: int, batch_size: int, seed: int | None) -> list[float]:
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


def fused_adam(parameters: list[nn.Parameter], **settings) -> torch.optim.Adam:
    """Adam with its fused kernel (one call for every parameter): the same update, rounded in another order, and a
    step of the small recommenders here costs up to a quarter less (README, *Unit 4*). torch 2.4 and later have it
    for floating-point tensors on the CPU and CUDA (and check the tensors at the first step); an older torch
    without it refuses `fused=True` here, and gets the for-loop kernel. A replayed training (`replayed_training`
    in the Unit 4 checks) uses the same trainer, so it steps alike."""
    try:
        return torch.optim.Adam(parameters, fused=True, **settings)
    except (RuntimeError, TypeError, ValueError):  # no fused kernel for this torch, device or dtype
        return torch.optim.Adam(parameters, **settings)


class RecommenderTrainer:
    """Adam on a recommender (a student's `MF`, `AutoRec` or `NeuMF`): every parameter is first re-initialised
    from a seeded N(0, init_std), by name (the order the student registered them in does not matter), so the
    student's own initialisation plays no part; then minibatches of `batch_size` examples in a fresh random order
    each epoch. Subclasses say what an example is and what it costs. It stays in the worker: the check gets a ref
    and trains in chunks (`recommender_steps`), so no single call runs long."""

    def __init__(self, model: nn.Module, num_examples: int, *, init_std: float, lr: float, weight_decay: float,
                 batch_size: int, seed: int) -> None:
        init = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for _, p in sorted(model.named_parameters(), key=lambda item: item[0]):
                p.copy_(init_std * torch.randn(p.shape, generator=init))
        torch.manual_seed(seed)  # dropout draws from the global generator
        self.model, self.num_examples, self.batch_size = model, num_examples, batch_size
        self.device, self.dtype = next(model.parameters()).device, next(model.parameters()).dtype
        self.optimizer = fused_adam(list(model.parameters()), lr=lr, weight_decay=weight_decay)
        self.generator = torch.Generator().manual_seed(seed + 1)  # batches and negatives, apart from the init
        self.order, self.position = torch.empty(0, dtype=torch.long), 0

    def next_batch(self) -> torch.Tensor:
        """Positions of the next examples (the last batch of an epoch may be smaller)."""
        if self.position >= len(self.order):
            self.order, self.position = torch.randperm(self.num_examples, generator=self.generator), 0
        batch = self.order[self.position:self.position + self.batch_size]
        self.position += len(batch)
        return batch

    def loss(self, batch: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def steps(self, count: int) -> list[float]:
        self.model.train()
        losses = []
        for _ in range(count):
            loss = self.loss(self.next_batch())
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            losses.append(float(loss.detach()))
        return losses


def _expect_shape(output: torch.Tensor, shape: tuple, what: str) -> torch.Tensor:
    if not isinstance(output, torch.Tensor) or tuple(output.shape) != tuple(shape):
        got = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise ValueError(f"{what} devolvió {got} y se esperaba un tensor de forma {tuple(shape)}")
    return output


class RatingTrainer(RecommenderTrainer):
    """Explicit ratings, d2l's L2 loss: 0.5 * mean((model(u, i) - r)^2) over a batch of (u, i, r)."""

    def __init__(self, model: nn.Module, users: torch.Tensor, items: torch.Tensor, ratings: torch.Tensor,
                 **settings) -> None:
        super().__init__(model, len(ratings), **settings)
        self.users, self.items, self.ratings = users.cpu(), items.cpu(), ratings.cpu()

    def loss(self, batch: torch.Tensor) -> torch.Tensor:
        u, i = self.users[batch].to(self.device), self.items[batch].to(self.device)
        r = self.ratings[batch].to(self.device, self.dtype)
        predictions = _expect_shape(self.model(u, i), r.shape, "el modelo")  # (B,)
        return 0.5 * ((predictions - r) ** 2).mean()


class AutoRecTrainer(RecommenderTrainer):
    """Rows of the (items, users) rating matrix, 0 where missing; the squared error of the reconstruction summed
    and divided by the number of observed ratings in the batch (the model masks its output in train mode)."""

    def __init__(self, model: nn.Module, rows: torch.Tensor, **settings) -> None:
        super().__init__(model, len(rows), **settings)
        self.rows = rows.cpu()

    def loss(self, batch: torch.Tensor) -> torch.Tensor:
        x = self.rows[batch].to(self.device, self.dtype)                      # (B, U)
        output = _expect_shape(self.model(x), x.shape, "el modelo")
        return 0.5 * ((output - x) ** 2).sum() / (x != 0).sum().clamp(min=1)


class BPRTrainer(RecommenderTrainer):
    """Implicit feedback: each positive (u, i) gets one negative j drawn uniformly among the items u did not
    interact with; the loss is the student's `bpr_loss(model(u, i), model(u, j))`."""

    def __init__(self, model: nn.Module, bpr_loss: Callable, users: torch.Tensor, items: torch.Tensor,
                 num_users: int, num_items: int, **settings) -> None:
        super().__init__(model, len(users), **settings)
        self.bpr_loss, self.users, self.items = bpr_loss, users.cpu(), items.cpu()
        seen = torch.zeros(num_users, num_items, dtype=torch.uint8)          # (U, I)
        seen[self.users, self.items] = 1
        self.unseen_count = num_items - seen.sum(dim=1)                      # (U,)
        if (self.unseen_count[self.users] == 0).any():
            raise ValueError("every user with positives needs an item left to draw as a negative")
        self.unseen_first = torch.sort(seen, dim=1, stable=True).indices     # (U, I): each user's unseen items first

    def negatives(self, users: torch.Tensor) -> torch.Tensor:
        """(B,) items, each uniform among its user's unseen ones: the r-th of them for r uniform in [0, count), one
        draw per example, whatever share of the items the user saw (README, *Unit 4*)."""
        count = self.unseen_count[users]                                     # (B,)
        u = torch.rand(users.shape, generator=self.generator, dtype=torch.float64)  # at most 1 - 2**-53
        return self.unseen_first[users, (u * count).long()]  # u * count < count: it never rounds up to count

    def loss(self, batch: torch.Tensor) -> torch.Tensor:
        u, i = self.users[batch], self.items[batch]
        j = self.negatives(u)
        u, i, j = u.to(self.device), i.to(self.device), j.to(self.device)
        positive = _expect_shape(self.model(u, i), u.shape, "el modelo")    # (B,)
        negative = _expect_shape(self.model(u, j), u.shape, "el modelo")
        return self.bpr_loss(positive, negative)


def make_rating_trainer(model: nn.Module, users: torch.Tensor, items: torch.Tensor, ratings: torch.Tensor,
                        **settings) -> RatingTrainer:
    return RatingTrainer(model, users, items, ratings, **settings)


def make_autorec_trainer(model: nn.Module, rows: torch.Tensor, **settings) -> AutoRecTrainer:
    return AutoRecTrainer(model, rows, **settings)


def make_bpr_trainer(model: nn.Module, bpr_loss: Callable, users: torch.Tensor, items: torch.Tensor,
                     num_users: int, num_items: int, **settings) -> BPRTrainer:
    return BPRTrainer(model, bpr_loss, users, items, num_users, num_items, **settings)


def recommender_steps(trainer: RecommenderTrainer, count: int) -> list[float]:
    if type(trainer) not in (RatingTrainer, AutoRecTrainer, BPRTrainer):
        raise TypeError("recommender_steps needs a trainer made by make_rating_trainer, make_autorec_trainer or "
                        "make_bpr_trainer")
    return trainer.steps(count)


DRIVERS: dict[str, Callable] = {
    fn.__name__: fn for fn in (
        module_state, trainable_parameters, load_module_state, forward_backward, make_trainer, train_steps,
        build_small_resnet, build_resnet18, vjp, make_char_lm_trainer, char_lm_steps, char_lm_state,
        build_sequence_classifier, make_rating_trainer, make_autorec_trainer, make_bpr_trainer, recommender_steps,
    )
}
