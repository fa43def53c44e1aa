"""User-style model definitions used by the tests (loaded as file.py:Class)."""

import time

from torch import nn


class TinyEncoder(nn.Module):
    """A small conv encoder with named stages, like a user's backbone + head."""

    def __init__(self, in_ch: int = 3, dim: int = 8):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(in_ch, dim, 3, padding=1), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(dim, 2)

    def forward(self, x):
        return self.head(self.pool(self.backbone(x)).flatten(1))


class NaNForBright(nn.Module):
    """Returns NaN latents for bright images (mean > 0.5)."""

    def forward(self, x):
        out = x.mean(dim=(2, 3))
        bright = x.mean(dim=(1, 2, 3)) > 0.5
        out[bright] = float("nan")
        return out


class Inconsistent(nn.Module):
    """Output width changes from one batch to the next (a user bug the encoder must report)."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return x.flatten(1)[:, : 4 + self.calls % 2]


class Slow(nn.Module):
    """Sleeps per batch so a test can interrupt an encode half-way."""

    def __init__(self, delay: float = 0.3):
        super().__init__()
        self.delay = delay
        self.lin = nn.Linear(3, 4)

    def forward(self, x):
        time.sleep(self.delay)
        return self.lin(x.mean(dim=(2, 3)))


class DemoDecoder(nn.Module):
    """A user's decoder: latent (32-d, the digits demo's `encoder` layer) -> (1, 8, 8) image.

    Same layout as the demo decoder ``pipeline.decoders.train_demo_decoder`` scripts, so its
    state dict loads here (the file.py:Class + checkpoint path).
    """

    def __init__(self, dim: int = 32, side: int = 8):
        super().__init__()
        import torch

        self.register_buffer("mu", torch.zeros(dim))
        self.register_buffer("sd", torch.ones(dim))
        self.side = side
        self.net = nn.Sequential(
            nn.Linear(dim, 128),
            nn.ReLU(),
            nn.Linear(128, 256),
            nn.ReLU(),
            nn.Linear(256, side * side),
            nn.Sigmoid(),
        )

    def forward(self, z):
        return self.net((z - self.mu) / self.sd).reshape(z.shape[0], 1, self.side, self.side)
