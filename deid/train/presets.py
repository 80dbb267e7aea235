"""Training presets: network sizes, resolution and schedule.

``paper`` follows PriCheXy-Net (256 px, U-Net 32/4, ResNet-50 attacker, DenseNet-121 classifier,
the paper's epochs) and needs a GPU. ``cpu`` keeps the method and shrinks the networks and the
resolution so that the whole train-evaluate cycle finishes on two cores.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Preset:
    """Everything that sizes a training run.

    Attributes
    ----------
    size
        Side of the square images the critics see and the generator warps.
    generator_size
        Side of the square the generator reads (its field is upsampled to the image).
    generator
        ``(features, levels)`` of the U-Net.
    verifier
        ``(blocks per stage, stem width, bottleneck blocks)`` of the attacker's ResNet.
    classifier
        ``(blocks per stage, growth, stem width)`` of the DenseNet.
    attacker_size
        Side of the square the learned metric attacker sees.
    attacker_epochs
        Most epochs of the learned metric attacker (it stops earlier after ``patience`` epochs
        without a better validation AUC).
    """

    name: str
    size: int
    generator_size: int
    generator: tuple[int, int]
    verifier: tuple[tuple[int, ...], int, bool]
    classifier: tuple[tuple[int, ...], int, int]
    batch: int = 32
    lr: float = 1e-4
    pretrain_epochs: int = 200
    adversarial_epochs: int = 250
    adversarial_pairs: int = 10_000
    critic_epochs: int = 100
    critic_pairs: int | None = None
    patience: int = 5
    critic_lr: float = 1e-4
    attacker_size: int = 256
    attacker_epochs: int = 30


PRESETS = {
    "paper": Preset(
        name="paper", size=256, generator_size=256, generator=(32, 4),
        verifier=((3, 4, 6, 3), 64, True), classifier=((6, 12, 24, 16), 32, 64),
    ),
    "cpu": Preset(
        name="cpu", size=128, generator_size=64, generator=(16, 4),
        verifier=((1, 1, 1, 1), 16, False), classifier=((4, 4, 4), 12, 24),
        lr=3e-4, pretrain_epochs=1, adversarial_epochs=4, adversarial_pairs=1_200,
        critic_epochs=6, critic_pairs=2_400, patience=2, critic_lr=1e-3, attacker_size=32, attacker_epochs=12,
    ),
    # Proves the whole chain (benchmarks/train_gpu.sh) in seconds; its figures mean nothing.
    "toy": Preset(
        name="toy", size=64, generator_size=16, generator=(4, 2),
        verifier=((1, 1), 4, False), classifier=((2, 2), 4, 8), batch=8,
        pretrain_epochs=1, adversarial_epochs=1, adversarial_pairs=32, critic_epochs=1, critic_pairs=32,
        patience=1, critic_lr=1e-3, attacker_size=16, attacker_epochs=1,
    ),
}

#: Generators lighter than a preset's own, by name: a quarter of its FLOPs (half the channels).
LIGHTER = {"paper": (16, 4), "cpu": (8, 4), "toy": (2, 2)}


def preset(name: str, light: bool = False) -> Preset:
    """The preset ``name``, with its lighter generator when ``light``."""
    try:
        base = PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}") from None
    return replace(base, name=f"{name}-light", generator=LIGHTER[name]) if light else base
