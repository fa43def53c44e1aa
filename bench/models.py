"""A small multispectral CNN encoder for the encode benchmark (loaded as file.py:Class)."""

from torch import nn


class SmallCNN(nn.Module):
    def __init__(self, in_ch: int = 5, dim: int = 128):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_ch, 32, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(64, dim, 3, stride=2, padding=1),
            nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x):
        return self.pool(self.features(x)).flatten(1)


class WideCNN(nn.Module):
    """A heavier encoder (~0.3 GMAC per 64x64 item) whose forward pass, not the decoding,
    bounds the encode: for the encode-vs-forward-only ratio."""

    def __init__(self, in_ch: int = 5, dim: int = 256):
        super().__init__()

        def block(a: int, b: int, stride: int) -> list[nn.Module]:
            return [nn.Conv2d(a, b, 3, stride=stride, padding=1), nn.BatchNorm2d(b), nn.ReLU()]

        self.features = nn.Sequential(
            *block(in_ch, 64, 1),
            *block(64, 128, 2),
            *block(128, 128, 1),
            *block(128, dim, 2),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x):
        return self.pool(self.features(x)).flatten(1)
