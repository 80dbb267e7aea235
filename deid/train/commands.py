"""What ``deid model train|evaluate|export|report`` do; :mod:`deid.cli` only parses arguments.

A working folder holds every artefact, so the steps can run apart (and in parallel):
``classifier-<preset>.pt`` (the classifier trained on real images), ``verifier-<preset>.pt`` (the
siamese attacker of the ``prichexy`` objective), ``linkage-<name>.ckpt`` (a linkage training's
checkpoint, to resume), ``generator-<name>.pt`` per trained generator, and ``eval-<name>.json`` per
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
from deid.train.loops import use_device  # noqa: F401 - re-exported for the CLI
from deid.train.networks import Deformation, generator_gflop, parameter_count
from deid.train.presets import Preset, preset
from deid.train.protocol import over_keys, over_keys_utility, reidentification, utility

log = structlog.get_logger("deid.train")


def _splits(shared: Path, p: Preset) -> tuple[Split, Split, Split]:
    root = shared_cxr(shared)
    return tuple(load_split(root, name, p.size) for name in ("train", "val", "test"))  # type: ignore[return-value]


def generator_name(p: Preset, mu: float, keep_last: bool = False) -> str:
    return f"{p.name}-mu{mu:g}" + ("-last" if keep_last else "")


def real_classifier(work: Path, p: Preset, train: Split, val: Split, seed: int = 0):
    """The classifier trained on real images, loaded from ``work`` or trained and saved there."""
    path = work / f"classifier-{p.name.removesuffix('-light')}.pt"
    if path.exists():
        classifier = loops.new_classifier(p)
        classifier.load_state_dict(torch.load(path, weights_only=True, map_location=loops.device())["classifier"])
        return classifier.eval()
    classifier = loops.train_classifier(p, train, val, seed)
    work.mkdir(parents=True, exist_ok=True)
    torch.save({"classifier": classifier.state_dict()}, path)
    return classifier


def critics(work: Path, p: Preset, train: Split, val: Split, seed: int = 0):
    """The classifier and the siamese attacker trained on real images, loaded from ``work`` or
    trained there (PriCheXy-Net's starting critics)."""
    classifier = real_classifier(work, p, train, val, seed)
    path = work / f"verifier-{p.name.removesuffix('-light')}.pt"
    verifier = loops.new_verifier(p)
    if path.exists():
        verifier.load_state_dict(torch.load(path, weights_only=True, map_location=loops.device())["verifier"])
        return classifier, verifier.eval()
    verifier = loops.train_verifier(p, train, val, seed)
    torch.save({"verifier": verifier.state_dict()}, path)
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
    _, steps, kept_step = loops.train_adversarial(p, deformation, copy.deepcopy(verifier), copy.deepcopy(classifier),
                                                  train_split, val, seed, keep_best=not keep_last)
    path = work / f"generator-{generator_name(p, mu, keep_last)}.pt"
    torch.save({"preset": preset_name, "light": light, "mu": mu, "seed": seed, "epochs": p.adversarial_epochs,
                "keep_last": keep_last, "steps": steps, "kept_step": kept_step,
                "minutes": (time.monotonic() - started) / 60, "state_dict": deformation.generator.state_dict()}, path)
    return path


def linkage_name(p: Preset, mu: float, intensity: float) -> str:
    return f"{p.name}-linkage-mu{mu:g}-i{intensity:g}"


def train_linkage(shared: Path, work: Path, preset_name: str, mu: float, intensity: float, light: bool, seed: int,
                  epochs: int, epoch_steps: int, utility_weight: float, lr: float = 1e-2,
                  budget_minutes: float | None = None, keep_last: bool = False) -> Path:
    """Train one generator against the linkage attack (:mod:`deid.train.linkage`), resuming from
    ``work/linkage-<name>.ckpt``; save it as ``work/generator-<name>.pt`` when done (the kept
    epoch's generator, or with ``keep_last`` the last one, as ``generator-<name>-last.pt``)."""
    from deid.train.linkage import train_linkage as run

    p = preset(preset_name, light)
    train_split, val, _ = _splits(shared, p)
    classifier = real_classifier(work, p, train_split, val)
    name = linkage_name(p, mu, intensity)
    deformation = loops.new_deformation(p, mu, seed, intensity, identity=True)
    state = run(p, deformation, classifier, train_split, val, seed, epochs, epoch_steps, work / f"linkage-{name}.ckpt",
                utility_weight, lr, budget_minutes)
    if keep_last:
        name += "-last"
    path = work / f"generator-{name}.pt"
    torch.save({"preset": preset_name, "light": light, "mu": mu, "intensity": intensity, "seed": seed,
                "objective": "linkage", "utility_weight": utility_weight, "lr": lr, "epochs": state["epoch"],
                "steps": state["steps"], "kept_step": state["steps" if keep_last else "kept_step"],
                "minutes": state["minutes"],
                "curve": state["curve"], "name": name,
                "state_dict": state["last" if keep_last else "state_dict"]}, path)
    return path


def load_generator(path: Path) -> tuple[Deformation, dict]:
    checkpoint = torch.load(path, weights_only=True, map_location=loops.device())
    p = preset(checkpoint["preset"], checkpoint["light"])
    deformation = loops.new_deformation(p, checkpoint["mu"], intensity=checkpoint.get("intensity", 0.0))
    deformation.generator.load_state_dict(checkpoint["state_dict"])
    return deformation.eval(), checkpoint


def checkpoint_name(checkpoint: dict) -> str:
    p = preset(checkpoint["preset"], checkpoint["light"])
    return checkpoint.get("name") or generator_name(p, checkpoint["mu"], checkpoint.get("keep_last", False))


#: The key under which an evaluation applies a keyed transform, and the attacker's own key.
EVALUATION_KEY, ATTACKER_KEY = b"deid evaluation key", b"the attacker's own key"


def evaluation_key(index: int) -> bytes:
    """The ``index``-th evaluation key of a keyed transform (the first is :data:`EVALUATION_KEY`)."""
    return EVALUATION_KEY if index == 0 else EVALUATION_KEY + f" {index}".encode()


def load_classifier(path: Path, p: Preset):
    """A classifier saved by :func:`real_classifier` or :func:`train_augmented_classifier`."""
    classifier = loops.new_classifier(p)
    classifier.load_state_dict(torch.load(path, weights_only=True, map_location=loops.device())["classifier"])
    return classifier.eval()


def train_augmented_classifier(shared: Path, out: Path, preset_name: str, augment: str, epochs: int,
                               seed: int = 0) -> Path:
    """Train the utility classifier on real images with standard augmentation (random changes up to
    the magnitudes ``augment`` names, :meth:`Magnitudes.parse`; not keyed to any run) and save it
    as ``out``."""
    from deid.train.keyed import Magnitudes

    p = preset(preset_name)
    train_split, val, _ = _splits(shared, p)
    started = time.monotonic()
    classifier = loops.train_classifier(p, train_split, val, seed, augment=Magnitudes.parse(augment), epochs=epochs)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"classifier": classifier.state_dict(), "augment": augment, "seed": seed,
                "minutes": (time.monotonic() - started) / 60}, out)
    return out


def evaluate(shared: Path, work: Path, preset_name: str, anonymizer: str, runs: int,
             dp_block: int = 4, dp_epsilon: float = 0.1, split: str = "test",
             classifiers: tuple[Path, ...] = (), min_genuine_pairs: int | None = None, keys: int = 1) -> Path:
    """Measure ``anonymizer`` (``real``, ``dp-pix``, ``keyed:<magnitudes>`` or a generator
    checkpoint) with the protocol of :mod:`deid.train.protocol`; write ``work/eval-<name>.json``.

    ``split`` ``val`` scores the validation split with the fixed attackers only (``runs`` must be
    0: the learned attackers stop on it), for sweeps that keep the test split unseen.
    ``classifiers``: the utility classifiers (the first gives ``classification``, every one is
    recorded under ``classifications``); default the real-image classifier of ``work``.
    ``min_genuine_pairs``: the fewest genuine pairs of a source in the weighted column.
    ``keys``: how many evaluation keys a keyed transform is measured under (:func:`evaluation_key`);
    every attacker's and the maximum's lists then hold the values of every key
    (:func:`~deid.train.protocol.over_keys`), so their spread is the key's as well as the runs'.
    """
    if split == "val" and runs:
        raise ValueError("the validation split is scored by the fixed attackers only: --runs 0")
    if keys < 1 or (keys > 1 and not anonymizer.startswith("keyed:")):
        raise ValueError("--keys takes a count of at least 1, and more than 1 only for a keyed transform")
    p = preset(preset_name)
    train_split, val, test = _splits(shared, p)
    scored_split = val if split == "val" else test
    if classifiers:
        chosen = {str(path): load_classifier(path, p) for path in classifiers}
    else:
        chosen = {"real-image classifier": real_classifier(work, p, train_split, val)}
    info: dict = {"anonymizer": anonymizer, "split": split}
    attacker_anonymize, search = None, None
    other_keys: list = []
    if anonymizer == "real":
        name, anonymize = "real", (lambda images: images)
    elif anonymizer == "dp-pix":
        from deid.pixels.dppix import dp_pix

        name = f"dp-pix-b{dp_block}-eps{dp_epsilon:g}"
        info.update(block=dp_block, epsilon=dp_epsilon, m=1.0)

        def anonymize(images: np.ndarray) -> np.ndarray:
            rng = np.random.default_rng(len(images))
            return np.stack([dp_pix(im, dp_block, dp_epsilon, 1.0, rng) for im in images]).astype(np.float32)
    elif anonymizer.startswith("keyed:"):
        from deid.train.attacks import registration_grid
        from deid.train.keyed import Magnitudes, keyed_anonymizer

        magnitudes = Magnitudes.parse(anonymizer.removeprefix("keyed:"))
        name = f"keyed-{magnitudes.label()}" + (f"-keys{keys}" if keys > 1 else "")
        info.update(magnitudes=magnitudes.as_dict(), gflop=0.0, keys=keys)
        anonymize = keyed_anonymizer(magnitudes, evaluation_key(0))
        other_keys = [keyed_anonymizer(magnitudes, evaluation_key(k)) for k in range(1, keys)]
        attacker_anonymize = keyed_anonymizer(magnitudes, ATTACKER_KEY)
        search = registration_grid(magnitudes.rotation, magnitudes.scale, magnitudes.shift)
    else:
        deformation, checkpoint = load_generator(Path(anonymizer))
        gp = preset(checkpoint["preset"], checkpoint["light"])
        name = checkpoint_name(checkpoint)
        info.update(epochs=checkpoint.get("epochs"), steps=checkpoint.get("steps"), curve=checkpoint.get("curve"),
                    kept_step=checkpoint.get("kept_step"),
                    intensity=checkpoint.get("intensity", 0.0), mu=checkpoint["mu"], generator=gp.generator,
                    generator_size=gp.generator_size,
                    gflop=generator_gflop(deformation.generator, gp.generator_size),
                    parameters=parameter_count(deformation.generator),
                    train_minutes=checkpoint.get("minutes"))

        def anonymize(images: np.ndarray) -> np.ndarray:
            return loops.anonymize(deformation, images)
    extra = {} if min_genuine_pairs is None else {"min_genuine_pairs": min_genuine_pairs}
    anonymizers = [anonymize, *other_keys]
    utilities = {label: over_keys_utility([utility(classifier, a, scored_split) for a in anonymizers])
                 for label, classifier in chosen.items()}
    result = {
        "name": name, "preset": asdict(p), **info,
        "reid": over_keys([reidentification(p, a, train_split, val, scored_split, runs,
                                            attacker_anonymize=attacker_anonymize, search=search, **extra)
                           for a in anonymizers]),
        "classification": next(iter(utilities.values())), "classifier": next(iter(utilities)),
        "classifications": {label: u["auc_mean"] for label, u in utilities.items()},
    }
    work.mkdir(parents=True, exist_ok=True)
    path = work / f"eval-{name}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path


def _mean_std(values: list[float]) -> str:
    values = [v for v in values if v == v]
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}"


def load_evaluations(work: Path) -> list[dict]:
    """Every ``eval-*.json`` in ``work``, real images first, then DP-Pix."""
    rows = [json.loads(p.read_text()) for p in sorted(work.glob("eval-*.json"))]
    rows.sort(key=lambda r: (r["name"] != "real", not r["name"].startswith("dp-pix"), r["name"]))
    return rows


def report(work: Path) -> str:
    """Markdown tables of every evaluation in ``work``: the maximum over attackers per source,
    weighted and pooled (mean ± std over runs) next to the classifier's AUC; each attacker's
    weighted AUC; and, on real images, the best fixed attacker against the learned one per source."""
    rows = load_evaluations(work)
    if not rows:
        return f"no evaluations in {work}"
    scored = rows[0]["reid"]["scored"]
    real = next((r for r in rows if r["name"] == "real"), None)
    lines = [
        "| anonymizer | GFLOP | steps | train min | learned runs | **max-attacker re-ID, weighted** | vs real | "
        "pooled | " + " | ".join(scored) + " | class. AUC | vs real | milestone |",
        "|---" * (11 + len(scored)) + "|",
    ]
    for r in rows:
        best = r["reid"]["max"]
        gflop = f"{r['gflop']:.2f}" if "gflop" in r else "–"
        steps = str(r["steps"]) if r.get("steps") else "–"
        minutes = f"{r['train_minutes']:.1f}" if r.get("train_minutes") else "–"
        learned_runs = len(r["reid"]["attackers"].get("learned", {}).get("weighted", []))
        gain, loss, milestone = "–", "–", "–"
        if real is not None and r is not real:
            record = privacy_record(r, real)
            gain = f"{record['reid_auc'] - record['real_reid_auc']:+.3f}"
            loss = f"{100 * (record['utility_auc'] - record['real_utility_auc']):+.1f}"
            milestone = "yes" if record["milestone"] else "no"
        lines.append(
            f"| {r['name']} | {gflop} | {steps} | {minutes} | {learned_runs} | **{_mean_std(best['weighted'])}** | "
            f"{gain} | {_mean_std(best['pooled'])} | "
            + " | ".join(_mean_std(best["by_source"][s]) for s in scored)
            + f" | {r['classification']['auc_mean']:.3f} | {loss} | {milestone} |"
        )
    attackers = list(rows[0]["reid"]["attackers"])
    lines += ["", "Weighted re-ID AUC of each attacker:", "",
              "| anonymizer | " + " | ".join(attackers) + " |", "|---" * (1 + len(attackers)) + "|"]
    for r in rows:
        lines.append(f"| {r['name']} | "
                     + " | ".join(_mean_std(r["reid"]["attackers"][a]["weighted"]) if a in r["reid"]["attackers"]
                                  else "not run" for a in attackers) + " |")
    if real is not None and "learned" in real["reid"]["attackers"]:
        per = real["reid"]["attackers"]
        choices = real["reid"].get("learned_choices", [])
        lines += ["", "| real images, per source | best fixed attacker | its AUC | learned attacker | "
                      "learned attacker's scorer, per run |", "|---|---|---|---|---|"]
        for s in scored:
            name = max((a for a in per if a != "learned"), key=lambda a: per[a]["by_source"][s][0])
            scorers = ", ".join(c.get(s, "–") for c in choices) or "–"
            lines.append(f"| {s} | {name} | {per[name]['by_source'][s][0]:.3f} | "
                         f"{_mean_std(per['learned']['by_source'][s])} | {scorers} |")
    for r in rows:
        if r.get("curve"):
            lines += ["", *curve_table(r["name"], r["curve"], r.get("kept_step"))]
    return "\n".join(lines)


def curve_table(name: str, curve: list[dict], kept_step: int | None, most: int = 16) -> list[str]:
    """A generator's validation curve: each fixed attacker's pooled AUC on the validation split,
    the classifier's AUC and the classifier term's weight, at up to ``most`` steps (the first, the
    last and the kept one among them)."""
    keys = [k for k in curve[0] if k not in ("step", "utility", "utility_weight")]
    chosen = sorted({0, len(curve) - 1, *np.linspace(0, len(curve) - 1, most - 1).round().astype(int).tolist(),
                     *[i for i, row in enumerate(curve) if row["step"] == kept_step]})
    lines = [f"Validation curve of {name} (pooled AUC on the validation split; * the kept step):", "",
             "| step | " + " | ".join(keys) + " | class. AUC | classifier weight |", "|---" * (len(keys) + 3) + "|"]
    for i in chosen:
        row = curve[i]
        mark = " *" if row["step"] == kept_step else ""
        weight = row.get("utility_weight")
        lines.append(f"| {row['step']}{mark} | " + " | ".join(f"{row[k]:.3f}" for k in keys)
                     + f" | {row['utility']:.3f} | {'–' if weight is None else f'{weight:g}'} |")
    return lines


#: The model card's results lie between these lines; ``deid model report --card`` rewrites them.
CARD_START, CARD_END = "<!-- results: deid model report -->", "<!-- end of results -->"


def write_card(card: Path, table: str) -> None:
    """Replace the results between :data:`CARD_START` and :data:`CARD_END` in ``card``.

    Raises
    ------
    ValueError
        If ``card`` lacks either line.
    """
    text = card.read_text()
    if CARD_START not in text or CARD_END not in text:
        raise ValueError(f"{card} has no {CARD_START} ... {CARD_END} section")
    head, rest = text.split(CARD_START, 1)
    card.write_text(head + CARD_START + "\n" + table + "\n" + CARD_END + rest.split(CARD_END, 1)[1])


#: The card's milestone: re-ID this far below real images, at most this much classifier AUC lost.
MILESTONE_GAIN, MILESTONE_UTILITY_LOSS = 0.10, 0.01


def privacy_record(model: dict, real: dict) -> dict:
    """What a model's metadata says of its measured privacy: its and real images' max-attacker
    weighted re-ID AUC (mean, std over runs), the classifier's AUC on both, and whether the
    milestone holds: at least :data:`MILESTONE_GAIN` below real images, the means apart by more
    than two standard deviations of each, and at most :data:`MILESTONE_UTILITY_LOSS` of classifier
    AUC lost."""
    def figure(r: dict) -> tuple[float, float]:
        values = r["reid"]["max"]["weighted"]
        return float(np.mean(values)), float(np.std(values))

    (m, m_std), (r, r_std) = figure(model), figure(real)
    m_utility, r_utility = model["classification"]["auc_mean"], real["classification"]["auc_mean"]
    milestone = (r - m >= MILESTONE_GAIN and m + 2 * m_std < r - 2 * r_std
                 and r_utility - m_utility <= MILESTONE_UTILITY_LOSS)
    return {"reid_auc": round(m, 4), "reid_auc_std": round(m_std, 4), "real_reid_auc": round(r, 4),
            "real_reid_auc_std": round(r_std, 4), "utility_auc": round(m_utility, 4),
            "real_utility_auc": round(r_utility, 4), "runs": len(model["reid"]["max"]["weighted"]),
            "milestone": bool(milestone), "card": "models/deform.md"}


def export_checkpoint(checkpoint: str, out: Path, evaluation: Path | None = None, real: Path | None = None) -> Path:
    """Export a generator checkpoint, or a keyed transform (``keyed:<magnitudes>``), to ``out``;
    write its metadata (``.json``) and, for a generator, a copy of the checkpoint (``.pt``, for
    parity checks and fine-tuning) beside it. With ``evaluation`` (its ``eval-*.json``) and
    ``real`` (``eval-real.json``), the metadata's ``privacy`` holds :func:`privacy_record`, which
    ``deid run`` reads to choose its default and to say what the model was measured to do (the
    manifest, the dry run, DEIDENTIFICATION.md).

    Raises
    ------
    ValueError
        If ``evaluation`` measured another model, or the checkpoint does not exist.
    """
    from deid.train.export import OPSET, export

    metadata: dict
    if checkpoint.startswith("keyed:"):
        from deid.pixels.deform import NOISE_DOMAIN
        from deid.train.keyed import KeyedTransform, Magnitudes

        magnitudes = Magnitudes.parse(checkpoint.removeprefix("keyed:"))
        checks = export(KeyedTransform(magnitudes), out)
        metadata = {
            "name": f"keyed-{magnitudes.label()}", "keyed": True, "magnitudes": magnitudes.as_dict(),
            "noise_size": magnitudes.noise_size,
            "noise": f"uniform [-1, 1], numpy PCG64 seeded by the run key's HMAC-SHA256 of the SOP Instance UID "
                     f"(domain {NOISE_DOMAIN!r})",
            "gflop": 0.0, "opset": OPSET,
            "input": "image [1, 1, height, width] float32 in [0, 1], MONOCHROME2; noise [1, noise_size] float32",
            "output": "warped, same shape", **checks,
        }
    else:
        path = Path(checkpoint)
        if not path.is_file():
            raise ValueError(f"no generator checkpoint {path}")
        deformation, info = load_generator(path)
        deformation = deformation.cpu()
        p = preset(info["preset"], info["light"])
        checks = export(deformation, out)
        metadata = {
            "name": checkpoint_name(info), "preset": p.name, "mu": info["mu"], "intensity": info.get("intensity", 0.0),
            "input_size": p.generator_size,
            "generator": {"features": p.generator[0], "levels": p.generator[1], "outputs": deformation.kernel.shape[0]},
            "parameters": parameter_count(deformation.generator),
            "gflop": round(generator_gflop(deformation.generator, p.generator_size), 4),
            "opset": OPSET, "input": "image [1, 1, height, width] float32 in [0, 1], MONOCHROME2",
            "output": "warped, same shape", **checks,
        }
        if path.resolve() != out.with_suffix(".pt").resolve():
            out.with_suffix(".pt").write_bytes(path.read_bytes())
    if evaluation is not None and real is not None:
        metadata = with_privacy(metadata, evaluation, real)
    out.with_suffix(".json").write_text(json.dumps(metadata, indent=2) + "\n")
    return out


def with_privacy(metadata: dict, evaluation: Path, real: Path) -> dict:
    """``metadata`` with ``privacy`` set to :func:`privacy_record` of ``evaluation`` (an
    ``eval-*.json``) against ``real`` (``eval-real.json`` of the same protocol).

    Raises
    ------
    ValueError
        If ``evaluation`` measured another model than ``metadata`` names.
    """
    measured = json.loads(evaluation.read_text())
    if measured["name"] != metadata["name"]:
        raise ValueError(f"{evaluation} measured {measured['name']}, not {metadata['name']}")
    return {**metadata, "privacy": privacy_record(measured, json.loads(real.read_text()))}


def record_measurement(model: Path, evaluation: Path, real: Path) -> Path:
    """Record a new measurement of an exported ``model`` in its metadata (``.json``), the graph
    untouched: for when the attacker suite changed and the model was measured again.

    Raises
    ------
    ValueError
        If ``evaluation`` measured another model, or ``model`` has no metadata.
    """
    path = model.with_suffix(".json")
    if not path.is_file():
        raise ValueError(f"{model} has no metadata {path}")
    path.write_text(json.dumps(with_privacy(json.loads(path.read_text()), evaluation, real), indent=2) + "\n")
    return path
