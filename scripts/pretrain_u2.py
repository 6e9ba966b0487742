"""Pretrain the course's small ResNet for Unit 2's fine-tuning part; writes the shipped checkpoint.

No pretrained weights can be downloaded where the course is graded, so Unit 2 ships
its own: torchvision's ResNet-18 layout at a quarter of its width
(`autograder.checklib.models.SmallResNet`, about 0.7 M parameters), trained on
procedurally drawn colour glyphs (`autograder.checklib.glyphs`, 10 classes, 32x32),
stored in float16 (about 1.4 MB). Deterministic for a given seed and torch build.

    .venv/bin/python scripts/pretrain_u2.py            # writes source/u2_cnn/small_resnet_glyphs.pt
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from autograder.checklib import GLYPH_CLASSES, glyphs
from autograder.checklib.models import small_resnet

REPO = Path(__file__).resolve().parents[1]
OUTPUT = REPO / "source" / "u2_cnn" / "small_resnet_glyphs.pt"


def accuracy(model: torch.nn.Module, X: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        return float((model(X).argmax(dim=1) == y).double().mean())


def pretrain(*, seed: int, steps: int, batch_size: int, lr: float) -> tuple[dict, float]:
    """Adam with a cosine schedule on fresh glyphs every step; returns the state dict and held-out accuracy."""
    torch.manual_seed(seed)
    data = torch.Generator().manual_seed(seed)
    model = small_resnet(len(GLYPH_CLASSES))
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    X_test, y_test = glyphs(data, 2000, size=32, channels=3)
    start = time.perf_counter()
    for step in range(1, steps + 1):
        model.train()
        X, y = glyphs(data, batch_size, size=32, channels=3)
        loss = F.cross_entropy(model(X), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % 200 == 0 or step == steps:
            print(f"step {step:5d}  loss {loss.item():.3f}  held-out accuracy {accuracy(model, X_test, y_test):.3f}"
                  f"  ({time.perf_counter() - start:.0f} s)", flush=True)
    return model.state_dict(), accuracy(model, X_test, y_test)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUTPUT)
    parser.add_argument("--seed", type=int, default=2021)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    args = parser.parse_args()
    state, held_out = pretrain(seed=args.seed, steps=args.steps, batch_size=args.batch_size, lr=args.lr)
    checkpoint = {
        "arch": "autograder.checklib.models.SmallResNet",
        "classes": list(GLYPH_CLASSES),
        "image_size": 32,
        "held_out_accuracy": round(held_out, 4),
        "state_dict": {k: v.half() if v.is_floating_point() else v for k, v in state.items()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 2**20:.2f} MiB), held-out accuracy {held_out:.3f}")


if __name__ == "__main__":
    main()
