"""Gradient norm of the training loss at a checkpoint (raw weights), over a few Fashion-MNIST batches.

    python scripts/grad_norms.py outputs/runs/fid_curves-presets-uvit_deep_10k/checkpoints/step0004000.ckpt

Used to pick a gradient-clipping threshold that cuts loss spikes only (docs/generation.md).
"""

from __future__ import annotations

import argparse

import torch
from torchvision.datasets import FashionMNIST

from scalelong.callbacks.gradients import block_grad_norms
from scalelong.lit import load_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("ckpt")
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    module = load_checkpoint(args.ckpt)
    module.train()
    data = FashionMNIST("data", train=True, download=False)
    n = args.batches * args.batch_size
    x = data.data[:n].float().div(127.5).sub(1).unsqueeze(1)
    y = data.targets[:n]
    torch.manual_seed(args.seed)  # the loss draws its noise from the global generator
    g = torch.Generator().manual_seed(args.seed)
    norms = []
    for xb, yb in zip(x.split(args.batch_size), y.split(args.batch_size)):
        t = torch.randint(0, module.diffusion.num_timesteps, (len(xb),), generator=g)
        per_sample = module.diffusion.loss(module.model, xb, module.labels(yb), t=t)
        loss = (per_sample * module.diffusion.loss_weights(t)).mean()
        module.model.zero_grad()
        loss.backward()
        norms.append(block_grad_norms(module.model)["total"])
    print(f"gradient norm over {len(norms)} batches of {args.batch_size}: "
          f"mean {sum(norms) / len(norms):.3f}, min {min(norms):.3f}, max {max(norms):.3f}")


if __name__ == "__main__":
    main()
