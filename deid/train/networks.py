"""The three networks of PriCheXy-Net and the deformation operator.

* :class:`UNet`: the flow-field generator (Buda et al.'s U-Net, tanh head, two channels).
* :class:`Deformation`: grid = identity - smooth(mu * G(x)), bilinear ``grid_sample``.
* :class:`SiameseVerifier`: the re-identification attacker (shared ResNet branches, sigmoid
  embeddings merged by absolute difference into one logit).
* :class:`Classifier`: the utility network (DenseNet, one logit per label).

The backbones are built here rather than taken from torchvision: no pretrained weights can be
loaded on these machines, and torchvision's wheels pin other torch releases.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def _double_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """U-Net with ``levels`` encoder stages of ``features * 2**i`` channels and a bottleneck of
    twice the last; tanh output in [-1, 1] (two channels: the flow field; a third: an intensity field).

    Parameters
    ----------
    features
        Channels of the first stage (32 in the paper).
    levels
        Encoder stages (4 in the paper).
    outputs
        Output channels: 2 (the paper's flow field) or 3 (flow and intensity).
    """

    def __init__(self, features: int = 32, levels: int = 4, outputs: int = 2) -> None:
        super().__init__()
        widths = [features * 2**i for i in range(levels)]
        self.encoders = nn.ModuleList()
        cin = 1
        for w in widths:
            self.encoders.append(_double_conv(cin, w))
            cin = w
        self.bottleneck = _double_conv(cin, cin * 2)
        self.upconvs = nn.ModuleList()
        self.decoders = nn.ModuleList()
        cin = cin * 2
        for w in reversed(widths):
            self.upconvs.append(nn.ConvTranspose2d(cin, w, 2, stride=2))
            self.decoders.append(_double_conv(2 * w, w))
            cin = w
        self.head = nn.Conv2d(cin, outputs, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for encoder in self.encoders:
            x = encoder(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = self.bottleneck(x)
        for upconv, decoder, skip in zip(self.upconvs, self.decoders, reversed(skips)):
            x = decoder(torch.cat([upconv(x), skip], dim=1))
        return torch.tanh(self.head(x))


def gaussian_kernel(size: int = 9, sigma: float = 2.0, channels: int = 2) -> torch.Tensor:
    """A normalised ``size`` x ``size`` Gaussian as a (channels, 1, size, size) depth-wise kernel."""
    axis = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-(axis**2) / (2 * sigma**2))
    k = torch.outer(g, g)
    return (k / k.sum()).expand(channels, 1, size, size).clone()


def identity_grid(n: int, h: int, w: int, like: torch.Tensor) -> torch.Tensor:
    """The identity sampling grid (n, h, w, 2) for ``align_corners=True``, x first.

    Built from ``arange`` so that an exported graph keeps h and w symbolic.
    """
    ys = torch.arange(h, dtype=like.dtype, device=like.device) * (2.0 / (h - 1)) - 1.0
    xs = torch.arange(w, dtype=like.dtype, device=like.device) * (2.0 / (w - 1)) - 1.0
    return torch.stack([xs.view(1, 1, w).expand(n, h, w), ys.view(1, h, 1).expand(n, h, w)], dim=-1)


def warp(image: torch.Tensor, displacement: torch.Tensor) -> torch.Tensor:
    """Sample ``image`` at identity - ``displacement`` (n, 2, h, w in normalised units), bilinear,
    border padding, ``align_corners=True``."""
    n, _, h, w = image.shape
    grid = identity_grid(n, h, w, image) - displacement.permute(0, 2, 3, 1)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=True)


def downsize(image: torch.Tensor, size: int) -> torch.Tensor:
    """Resize ``image`` (n, 1, h, w) of any size to ``size`` x ``size``: bilinear to 8x the target,
    then 8x8 means, a cheap anti-aliased resize that keeps h and w symbolic in an export."""
    up = F.interpolate(image, size=(8 * size, 8 * size), mode="bilinear", align_corners=False)
    return F.avg_pool2d(up, 8)


class Deformation(nn.Module):
    """PriCheXy-Net's anonymizer, for images of any size, optionally with an intensity field.

    The image is downsized to the generator's input, the generator's field is scaled by ``mu``
    and smoothed with a 9x9 Gaussian (sigma 2) at that size, upsampled to the image's size and
    applied there. Units are normalised (-1..1 across the image), so ``mu`` bounds the same
    fraction of the image at every resolution. With ``intensity`` > 0 the generator's third
    channel, scaled by ``intensity`` and smoothed alike, is added to the warped image (clipped to
    [0, 1]): a smooth change of brightness of at most ``intensity`` of the grey range.

    The released code smooths the absolute grid with zero padding, which pulls the outer four
    pixels inward even for a zero field; here the displacement is smoothed instead, so that
    ``mu = 0`` (or a zero field) is exactly the identity.

    Parameters
    ----------
    generator
        The field network: two output channels, three with ``intensity``.
    mu
        Deformation degree (the largest displacement, in normalised units).
    input_size
        Side of the square the generator sees.
    intensity
        Largest change of grey level (on the [0, 1] scale); 0: warp only.
    """

    kernel: torch.Tensor
    scale: torch.Tensor

    def __init__(self, generator: UNet, mu: float, input_size: int, kernel: int = 9, sigma: float = 2.0,
                 intensity: float = 0.0) -> None:
        super().__init__()
        self.generator = generator
        self.mu = mu
        self.intensity = intensity
        self.input_size = input_size
        channels = 3 if intensity > 0 else 2
        self.register_buffer("kernel", gaussian_kernel(kernel, sigma, channels), persistent=False)
        self.register_buffer("scale", torch.tensor([mu, mu, intensity][:channels]).view(1, channels, 1, 1),
                             persistent=False)

    def fields(self, x: torch.Tensor) -> torch.Tensor:
        """The smoothed fields (n, 2 or 3, h, w) for ``x`` (n, 1, h, w): displacement, then intensity."""
        field = self.scale * self.generator(downsize(x, self.input_size))
        field = F.conv2d(field, self.kernel, padding=self.kernel.shape[-1] // 2, groups=self.kernel.shape[0])
        return F.interpolate(field, size=x.shape[-2:], mode="bilinear", align_corners=True)

    def displacement(self, x: torch.Tensor) -> torch.Tensor:
        """The smoothed displacement field (n, 2, h, w) for ``x`` (n, 1, h, w)."""
        return self.fields(x)[:, :2]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fields = self.fields(x)
        warped = warp(x, fields[:, :2])
        if self.intensity > 0:
            return (warped + fields[:, 2:]).clamp(0.0, 1.0)
        return warped


def _shortcut(cin: int, cout: int, stride: int) -> nn.Module:
    if stride == 1 and cin == cout:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout),
        )
        self.skip = _shortcut(cin, cout, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.skip(x))


class _Bottleneck(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        mid = cout // 4
        self.body = nn.Sequential(
            nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
            nn.Conv2d(mid, mid, 3, stride, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
            nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout),
        )
        self.skip = _shortcut(cin, cout, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.skip(x))


class ResNet(nn.Module):
    """A ResNet trunk ending in global average pooling.

    Parameters
    ----------
    blocks
        Blocks per stage: (3, 4, 6, 3) with ``bottleneck=True`` and width 64 is ResNet-50.
    width
        Channels of the stem; stage i has ``width * 2**i`` (times 4 for bottleneck blocks).
    """

    def __init__(self, blocks: tuple[int, ...], width: int, bottleneck: bool) -> None:
        super().__init__()
        block = _Bottleneck if bottleneck else _BasicBlock
        expansion = 4 if bottleneck else 1
        self.stem = nn.Sequential(
            nn.Conv2d(1, width, 7, 2, 3, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, 1),
        )
        layers, cin = [], width
        for i, count in enumerate(blocks):
            cout = width * 2**i * expansion
            for j in range(count):
                layers.append(block(cin, cout, 2 if j == 0 and i > 0 else 1))
                cin = cout
        self.stages = nn.Sequential(*layers)
        self.out_features = cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x)).mean(dim=(2, 3))


class DenseNet(nn.Module):
    """A DenseNet trunk (BN-ReLU-conv1x1-BN-ReLU-conv3x3 layers, transitions halve the channels)
    ending in global average pooling. ``growth=32, blocks=(6, 12, 24, 16), width=64`` is
    DenseNet-121."""

    def __init__(self, blocks: tuple[int, ...], growth: int, width: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            nn.Conv2d(1, width, 7, 2, 3, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, 1),
        ]
        channels = width
        for i, count in enumerate(blocks):
            for _ in range(count):
                layers.append(_DenseLayer(channels, growth))
                channels += growth
            if i < len(blocks) - 1:
                layers.append(nn.Sequential(
                    nn.BatchNorm2d(channels), nn.ReLU(inplace=True),
                    nn.Conv2d(channels, channels // 2, 1, bias=False), nn.AvgPool2d(2),
                ))
                channels //= 2
        layers += [nn.BatchNorm2d(channels), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.out_features = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).mean(dim=(2, 3))


class _DenseLayer(nn.Module):
    def __init__(self, cin: int, growth: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.BatchNorm2d(cin), nn.ReLU(inplace=True), nn.Conv2d(cin, 4 * growth, 1, bias=False),
            nn.BatchNorm2d(4 * growth), nn.ReLU(inplace=True), nn.Conv2d(4 * growth, growth, 3, 1, 1, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.body(x)], dim=1)


def _standardise(x: torch.Tensor) -> torch.Tensor:
    # Grey-level statistics of the training images, in place of ImageNet's (no ImageNet weights).
    return (x - 0.5) / 0.25


class SiameseVerifier(nn.Module):
    """Re-identification attacker: shared trunk, 128-d sigmoid embeddings, |e1 - e2|, one logit."""

    def __init__(self, trunk: ResNet, embedding: int = 128) -> None:
        super().__init__()
        self.trunk = trunk
        self.embed = nn.Linear(trunk.out_features, embedding)
        self.head = nn.Linear(embedding, 1)

    def embedding(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.embed(self.trunk(_standardise(x))))

    def score(self, e1: torch.Tensor, e2: torch.Tensor) -> torch.Tensor:
        """The same-patient logit of two embeddings."""
        return self.head(torch.abs(e1 - e2)).squeeze(1)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        return self.score(self.embedding(x1), self.embedding(x2))


class Classifier(nn.Module):
    """Utility network: a DenseNet trunk and one logit per label."""

    def __init__(self, trunk: DenseNet, labels: int) -> None:
        super().__init__()
        self.trunk = trunk
        self.head = nn.Linear(trunk.out_features, labels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(_standardise(x)))


def generator_gflop(generator: UNet, size: int) -> float:
    """Floating-point operations of one generator forward pass at ``size`` x ``size``, in GFLOP."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        generator.eval()(torch.zeros(1, 1, size, size, device=next(generator.parameters()).device))
    return counter.get_total_flops() / 1e9


def parameter_count(module: nn.Module) -> int:
    return sum(math.prod(p.shape) for p in module.parameters())
