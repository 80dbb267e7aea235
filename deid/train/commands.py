"""What ``deid model train|evaluate|export|report`` do; :mod:`deid.cli` only parses arguments.

A working folder holds every artefact, so the steps can run apart (and in parallel):
``critics-<preset>.pt`` (the classifier and the attacker trained on real images, the generator's
starting critics), ``generator-<name>.pt`` per trained generator, and ``eval-<name>.json`` per
evaluated anonymizer.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import structlog
import torch

from deid.train import loops
from deid.train.data import Split, load_split, shared_cxr
from deid.train.networks import Deformation, generator_gflop, parameter_count
from deid.train.presets import Preset, preset
from deid.train.protocol import reidentification, utility

log = structlog.get_logger("deid.train")


def _splits(shared: Path, p: Preset) -> tuple[Split, Split, Split]:
    root = shared_cxr(shared)
    return tuple(load_split(root, name, p.size) for name in ("train", "val", "test"))  # type: ignore[return-value]


def generator_name(p: Preset, mu: float, keep_last: bool = False) -> str:
    return f"{p.name}-mu{mu:g}" + ("-last" if keep_last else "")


def critics(work: Path, p: Preset, train: Split, val: Split, seed: int = 0):
    """The classifier and attacker trained on real images, loaded from ``work`` or trained there."""
    path = work / f"critics-{p.name.removesuffix('-light')}.pt"
    classifier, verifier = loops.new_classifier(p), loops.new_verifier(p)
    if path.exists():
        state = torch.load(path, weights_only=True)
        classifier.load_state_dict(state["classifier"])
        verifier.load_state_dict(state["verifier"])
        return classifier.eval(), verifier.eval()
    classifier = loops.train_classifier(p, train, val, seed)
    verifier = loops.train_verifier(p, train, val, seed)
    work.mkdir(parents=True, exist_ok=True)
    torch.save({"classifier": classifier.state_dict(), "verifier": verifier.state_dict()}, path)
    return classifier, verifier


def train(shared: Path, work: Path, preset_name: str, mu: float, light: bool, seed: int,
          epochs: int | None = None, keep_last: bool = False) -> Path:
    """Train one generator (both phases) and save it as ``work/generator-<name>.pt``;
    ``epochs`` overrides the preset's adversarial epochs; ``keep_last`` keeps the last epoch's
    generator instead of the one with the lowest validation loss (and adds ``-last`` to the name)."""
    p = preset(preset_name, light)
    if epochs is not None:
        p = replace(p, adversarial_epochs=epochs)
    train_split, val, _ = _splits(shared, p)
    classifier, verifier = critics(work, p, train_split, val)
    started = time.monotonic()
    deformation = loops.new_deformation(p, mu, seed)
    loops.pretrain_generator(p, deformation, train_split, val, seed)
    loops.train_adversarial(p, deformation, copy.deepcopy(verifier), copy.deepcopy(classifier),
                            train_split, val, seed, keep_best=not keep_last)
    path = work / f"generator-{generator_name(p, mu, keep_last)}.pt"
    torch.save({"preset": preset_name, "light": light, "mu": mu, "seed": seed, "epochs": p.adversarial_epochs,
                "keep_last": keep_last,
                "minutes": (time.monotonic() - started) / 60, "state_dict": deformation.generator.state_dict()}, path)
    return path


def load_generator(path: Path) -> tuple[Deformation, dict]:
    checkpoint = torch.load(path, weights_only=True)
    p = preset(checkpoint["preset"], checkpoint["light"])
    deformation = loops.new_deformation(p, checkpoint["mu"])
    deformation.generator.load_state_dict(checkpoint["state_dict"])
    return deformation.eval(), checkpoint


def evaluate(shared: Path, work: Path, preset_name: str, anonymizer: str, runs: int,
             dp_block: int = 4, dp_epsilon: float = 0.1) -> Path:
    """Measure ``anonymizer`` (``real``, ``dp-pix`` or a generator checkpoint) with the protocol
    of :mod:`deid.train.protocol`; write ``work/eval-<name>.json``."""
    p = preset(preset_name)
    train_split, val, test = _splits(shared, p)
    classifier, _ = critics(work, p, train_split, val)
    info: dict = {"anonymizer": anonymizer}
    if anonymizer == "real":
        name, anonymize = "real", (lambda images: images)
    elif anonymizer == "dp-pix":
        from deid.pixels.dppix import dp_pix

        name = f"dp-pix-b{dp_block}-eps{dp_epsilon:g}"
        info.update(block=dp_block, epsilon=dp_epsilon, m=1.0)

        def anonymize(images: np.ndarray) -> np.ndarray:
            rng = np.random.default_rng(len(images))
            return np.stack([dp_pix(im, dp_block, dp_epsilon, 1.0, rng) for im in images]).astype(np.float32)
    else:
        deformation, checkpoint = load_generator(Path(anonymizer))
        gp = preset(checkpoint["preset"], checkpoint["light"])
        name = generator_name(gp, checkpoint["mu"], checkpoint.get("keep_last", False))
        info.update(epochs=checkpoint.get("epochs"), mu=checkpoint["mu"], generator=gp.generator,
                    generator_size=gp.generator_size,
                    gflop=generator_gflop(deformation.generator, gp.generator_size),
                    parameters=parameter_count(deformation.generator),
                    train_minutes=checkpoint.get("minutes"))

        def anonymize(images: np.ndarray) -> np.ndarray:
            return loops.anonymize(deformation, images)
    result = {
        "name": name, "preset": asdict(p), **info,
        "reid": reidentification(p, anonymize, train_split, val, test, runs),
        "classification": utility(classifier, anonymize, test),
    }
    path = work / f"eval-{name}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path


def report(work: Path) -> str:
    """A markdown table of every ``eval-*.json`` in ``work``, real images first.

    Besides the pooled AUC (within-source pairs of all sources scored together, which a verifier
    can lift by scoring whole sources higher), it gives each source's AUC and their mean weighted
    by genuine pairs.
    """
    rows = [json.loads(p.read_text()) for p in sorted(work.glob("eval-*.json"))]
    rows.sort(key=lambda r: (r["name"] != "real", r["name"]))
    sources = sorted({s for r in rows for s in r["reid"]["by_source"]})
    lines = [
        "| anonymizer | generator GFLOP | re-ID AUC pooled (mean ± std) | re-ID AUC per source, weighted | "
        + " | ".join(f"re-ID {s}" for s in sources) + " | class. AUC (mean) |",
        "|---" * (5 + len(sources)) + "|",
    ]
    for r in rows:
        reid = r["reid"]
        per_source = [reid["by_source"].get(s, {}).get("auc_mean") for s in sources]
        lines.append(
            f"| {r['name']} | {r['gflop']:.2f} | " if "gflop" in r else f"| {r['name']} | – | "
        )
        lines[-1] += (
            f"{reid['auc_mean']:.3f} ± {reid['auc_std']:.3f} ({len(reid['auc_runs'])} runs) | "
            f"{weighted_source_auc(reid):.3f} | "
            + " | ".join("–" if v is None else f"{v:.3f}" for v in per_source)
            + f" | {r['classification']['auc_mean']:.3f} |"
        )
    return "\n".join(lines)


def weighted_source_auc(reid: dict) -> float:
    """The per-source AUCs (each the mean over attackers) weighted by their genuine pairs."""
    known = [v for v in reid["by_source"].values() if v["auc_mean"] is not None]
    return sum(v["auc_mean"] * v["genuine_pairs"] for v in known) / sum(v["genuine_pairs"] for v in known)


def export_checkpoint(checkpoint: Path, out: Path) -> Path:
    """Export a generator checkpoint to ``out``; write its metadata (``.json``) and a copy of the
    checkpoint (``.pt``, for parity checks and fine-tuning) beside it."""
    from deid.train.export import OPSET, export

    deformation, info = load_generator(checkpoint)
    p = preset(info["preset"], info["light"])
    checks = export(deformation, out)
    metadata = {
        "name": generator_name(p, info["mu"], info.get("keep_last", False)), "preset": p.name, "mu": info["mu"],
        "input_size": p.generator_size, "generator": {"features": p.generator[0], "levels": p.generator[1]},
        "parameters": parameter_count(deformation.generator),
        "gflop": round(generator_gflop(deformation.generator, p.generator_size), 4),
        "opset": OPSET, "input": "image [1, 1, height, width] float32 in [0, 1], MONOCHROME2",
        "output": "warped, same shape", **checks,
    }
    out.with_suffix(".json").write_text(json.dumps(metadata, indent=2) + "\n")
    if checkpoint.resolve() != out.with_suffix(".pt").resolve():
        out.with_suffix(".pt").write_bytes(checkpoint.read_bytes())
    return out
