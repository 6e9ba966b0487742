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
    """`model.load_state_dict(state, strict=True)`: the values are copied into the existing tensors."""
    model.load_state_dict(state, strict=True)


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


DRIVERS: dict[str, Callable] = {
    fn.__name__: fn for fn in (
        module_state, trainable_parameters, load_module_state, forward_backward, make_trainer, train_steps,
        build_small_resnet, build_resnet18,
    )
}
