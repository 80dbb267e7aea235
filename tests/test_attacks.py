"""The attacker suite, the linkage-trained generator and the default that follows the model card."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the train extra (torch) is not installed")

pytestmark = pytest.mark.train

from deid.train import loops  # noqa: E402
from deid.train.attacks import BASELINES, hog_features, ncc_features, ncc_torch, pair_scores  # noqa: E402
from deid.train.data import Split  # noqa: E402
from deid.train.metrics import roc_auc  # noqa: E402
from deid.train.presets import preset  # noqa: E402
from deid.train.protocol import reidentification  # noqa: E402

TOY = dataclasses.replace(preset("cpu"), size=64, generator_size=16, generator=(4, 2), batch=8,
                          attacker_size=16, attacker_epochs=1, classifier=((2, 2), 4, 8))


def synthetic_split(patients: int, per_patient: int, linked: bool, seed: int, sources: int = 2,
                    shared: float = 0.0) -> Split:
    """64-px images of smooth 8x8-cell patterns plus a little noise: with ``linked``, a patient's
    images share the patient's pattern, else each has its own (nothing links them); ``shared``
    weighs a pattern common to every image, which brings impostors' correlation near genuine
    pairs', as in radiographs."""
    rng = np.random.default_rng(seed)
    common = rng.random((8, 8))
    images, ids, names = [], [], []
    for p in range(patients):
        base = rng.random((8, 8))
        for _ in range(per_patient):
            pattern = base if linked else rng.random((8, 8))
            pattern = shared * common + (1 - shared) * (0.5 * pattern + 0.5 * rng.random((8, 8)) if shared else pattern)
            image = np.kron(pattern, np.ones((8, 8))) + 0.05 * rng.standard_normal((64, 64))
            images.append(np.clip(image, 0, 1))
            ids.append(f"p{p}")
            names.append(f"s{p % sources}")
    n = len(images)
    targets = (rng.random((n, 3)) < 0.5).astype(np.float32)
    return Split(np.array(images, np.float32), np.array(ids), np.array(names), targets, np.ones((n, 3), np.float32))


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_fixed_attackers_link_known_pairs_and_nothing_else(name):
    for linked, low, high in ((True, 0.95, 1.0), (False, 0.3, 0.7)):
        split = synthetic_split(20, 2, linked, seed=1)
        pairs, genuine = split.all_within_source_pairs()
        features = BASELINES[name](split.images)
        auc = roc_auc(genuine, pair_scores(features, features, pairs))
        assert low <= auc <= high, (name, linked, auc)


def test_ncc_is_the_correlation_coefficient_and_torch_agrees():
    rng = np.random.default_rng(0)
    a, b = rng.random((2, 64, 64))
    features = ncc_features(np.stack([a, b]), 32)
    small = [x.reshape(32, 2, 32, 2).mean(axis=(1, 3)).ravel() for x in (a, b)]
    assert features[0] @ features[1] == pytest.approx(np.corrcoef(*small)[0, 1])
    assert np.allclose(ncc_torch(torch.from_numpy(np.stack([a, b])[:, None]).float(), 32).numpy(), features,
                       atol=1e-5)
    assert hog_features(np.stack([a, a]))[0] @ hog_features(np.stack([a, a]))[1] == pytest.approx(1.0)


def test_registration_and_alignment_undo_a_random_affine_map_that_defeats_plain_correlation():
    from deid.train.attacks import aligned_scores, registration_scores
    from deid.train.keyed import Magnitudes, keyed_anonymizer

    split = synthetic_split(24, 2, True, seed=7, shared=0.5)
    pairs, genuine = split.all_within_source_pairs()
    moved = keyed_anonymizer(Magnitudes(rotation=10, scale=0.08, shift=0.08), b"k" * 16)(split.images)
    plain = roc_auc(genuine, pair_scores(ncc_features(moved, 32), ncc_features(split.images, 32), pairs))
    registered = roc_auc(genuine, registration_scores(moved, split.images, pairs))
    aligned = roc_auc(genuine, aligned_scores(moved, split.images, split.sources, pairs))
    assert registered > plain + 0.05 and aligned > plain + 0.05, (plain, registered, aligned)


def test_protocol_scores_the_maximum_over_attackers():
    train, val, test = (synthetic_split(12, 2, True, seed=s) for s in (2, 3, 4))
    reid = reidentification(TOY, lambda images: images, train, val, test, runs=2)
    assert set(reid["attackers"]) == {*BASELINES, "ncc32-both", "registration", "ncc32-aligned", "learned"}
    assert len(reid["max"]["weighted"]) == 2 and len(reid["attackers"]["learned"]["weighted"]) == 2
    for run, value in enumerate(reid["max"]["pooled"]):
        assert value == max(a["pooled"][min(run, len(a["pooled"]) - 1)] for a in reid["attackers"].values())
    assert reid["scored"] == []  # no toy source has 40 genuine pairs ...
    assert np.isnan(reid["max"]["weighted"][0])  # ... so there is no weighted figure


def test_linkage_training_lowers_the_correlation_and_resumes(tmp_path):
    from deid.train.linkage import train_linkage

    train, val = synthetic_split(16, 2, True, seed=5, shared=0.7), synthetic_split(8, 2, True, seed=6, shared=0.7)
    classifier = loops.new_classifier(TOY).eval()
    deformation = loops.new_deformation(TOY, 0.3, seed=0, intensity=0.3, identity=True)
    checkpoint = tmp_path / "linkage.ckpt"
    first = train_linkage(TOY, deformation, classifier, train, val, 0, 1, 3, checkpoint, 1.0, lr=1e-2)
    assert first["steps"] == 3 and checkpoint.is_file()
    resumed = loops.new_deformation(TOY, 0.3, seed=0, intensity=0.3, identity=True)
    second = train_linkage(TOY, resumed, classifier, train, val, 0, 4, 3, checkpoint, 1.0, lr=1e-2)
    assert second["steps"] == 12 and [row["step"] for row in second["curve"]] == [0, 3, 6, 9, 12]
    # The correlation of genuine pairs drops (a toy AUC of 16 pairs is too coarse to show it).
    pairs = val.genuine_pairs()

    def genuine_correlation(model) -> float:
        anonymized = loops.anonymize(model, val.images)
        return pair_scores(ncc_features(anonymized, 32), ncc_features(val.images, 32), pairs).mean()

    assert genuine_correlation(resumed) < genuine_correlation(
        loops.new_deformation(TOY, 0.3, seed=0, intensity=0.3, identity=True)) - 0.01


def test_default_pixels_follow_the_model_card(tmp_path, monkeypatch):
    import deid.shipped as shipped
    from deid.config import RunConfig

    model = tmp_path / "deform.onnx"
    monkeypatch.setattr(shipped, "default_model", lambda: model)
    assert shipped.default_pixels() == "none"  # no metadata at all
    record = {"reid_auc": 0.62, "reid_auc_std": 0.01, "real_reid_auc": 0.76, "real_reid_auc_std": 0.0,
              "utility_auc": 0.86, "real_utility_auc": 0.865, "runs": 3, "card": "models/deform.md"}
    for milestone, expected in ((False, "none"), (True, "deform")):
        model.with_suffix(".json").write_text(json.dumps({"privacy": {**record, "milestone": milestone}}))
        assert shipped.default_pixels() == expected
        assert RunConfig("basic", (), b"k" * 32).pixels == expected
    assert "0.620 against 0.760" in shipped.privacy_summary(shipped.model_privacy(model))


def test_privacy_record_needs_the_gain_outside_two_deviations_and_the_utility():
    from deid.train.commands import privacy_record

    def evaluation(weighted, utility):
        return {"reid": {"max": {"weighted": weighted}}, "classification": {"auc_mean": utility}}

    real = evaluation([0.76, 0.76, 0.76], 0.865)
    assert privacy_record(evaluation([0.64, 0.65, 0.63], 0.86), real)["milestone"]
    assert not privacy_record(evaluation([0.64, 0.65, 0.63], 0.85), real)["milestone"]  # 1.5 points lost
    assert not privacy_record(evaluation([0.72, 0.66, 0.58], 0.86), real)["milestone"]  # too wide a spread
    assert not privacy_record(evaluation([0.68, 0.68, 0.68], 0.86), real)["milestone"]  # 0.08 below


def test_a_new_measurement_is_recorded_in_the_models_metadata_and_refused_for_another_model(tmp_path):
    from click.testing import CliRunner

    from deid.cli import main

    model = tmp_path / "deform.onnx"
    model.write_bytes(b"graph")
    model.with_suffix(".json").write_text(json.dumps({"name": "m", "sha256": "s"}))

    def evaluation(name, weighted, utility):
        path = tmp_path / f"eval-{name}.json"
        path.write_text(json.dumps({"name": name, "reid": {"max": {"weighted": weighted}},
                                    "classification": {"auc_mean": utility}}))
        return str(path)

    real = evaluation("real", [0.85, 0.85, 0.85], 0.917)
    result = CliRunner().invoke(main, ["model", "record", str(model), "--evaluation",
                                       evaluation("m", [0.84, 0.85, 0.86], 0.91), "--real", real])
    assert result.exit_code == 0, result.output
    metadata = json.loads(model.with_suffix(".json").read_text())
    assert metadata["sha256"] == "s" and model.read_bytes() == b"graph"
    assert metadata["privacy"]["reid_auc"] == 0.85 and metadata["privacy"]["real_reid_auc"] == 0.85
    assert metadata["privacy"]["milestone"] is False
    refused = CliRunner().invoke(main, ["model", "record", str(model), "--evaluation",
                                        evaluation("other", [0.6], 0.91), "--real", real])
    assert refused.exit_code == 2 and "measured other, not m" in refused.output


def test_report_says_each_rows_gain_over_real_images_and_whether_it_meets_the_milestone(tmp_path):
    from deid.train.commands import report

    def evaluation(name, weighted, utility, learned=None, choices=None, **training):
        sources = {"s": [w + 0.01 for w in weighted]}
        reid = {"scored": ["s"], "max": {"weighted": weighted, "pooled": weighted, "by_source": sources},
                "attackers": {"ncc32": {"weighted": [weighted[0]], "pooled": [weighted[0]],
                                        "by_source": {"s": [0.70]}}}}
        if learned:
            reid["attackers"]["learned"] = {"weighted": learned, "pooled": learned, "by_source": {"s": learned}}
            reid["learned_choices"] = choices
        (tmp_path / f"eval-{name}.json").write_text(json.dumps(
            {"name": name, "reid": reid, "classification": {"auc_mean": utility}, **training}))

    evaluation("real", [0.76, 0.76, 0.76], 0.865, [0.75, 0.76, 0.74], [{"s": "fusion"}, {"s": "hog64-8"},
                                                                       {"s": "fusion"}])
    evaluation("good", [0.64, 0.65, 0.63], 0.86, steps=40, train_minutes=0.41)
    evaluation("lossy", [0.64, 0.65, 0.63], 0.85)
    table = report(tmp_path)
    main, _, rest = table.partition("\n\n")
    rows = {line.split(" | ")[0].strip("| "): line for line in main.splitlines()}
    rows["s"] = next(line for line in rest.splitlines() if line.startswith("| s |"))
    assert rows["good"].startswith("| good | – | 40 | 0.4 | 0 | **0.640 ± 0.008** |")
    assert rows["good"].endswith("| -0.120 | 0.640 ± 0.008 | 0.650 ± 0.008 | 0.860 | -0.5 | yes |")
    assert rows["lossy"].endswith("| 0.850 | -1.5 | no |")
    assert rows["s"] == "| s | ncc32 | 0.700 | 0.750 ± 0.008 | fusion, hog64-8, fusion |"
    header, separator = table.splitlines()[:2]
    assert header.count("|") == separator.count("|")


def test_report_goes_between_the_cards_results_lines(tmp_path):
    from deid.train.commands import CARD_END, CARD_START, write_card

    card = tmp_path / "card.md"
    card.write_text(f"# card\n{CARD_START}\nold table\n{CARD_END}\nwhat did not work\n")
    write_card(card, "| new | table |")
    assert card.read_text() == f"# card\n{CARD_START}\n| new | table |\n{CARD_END}\nwhat did not work\n"
    card.write_text("# card without the lines\n")
    with pytest.raises(ValueError, match="results"):
        write_card(card, "| new |")


def test_keyed_noise_follows_the_key_and_the_uid():
    from deid.pixels.deform import keyed_noise
    from deid.pseudonyms import Pseudonymizer

    key, other = Pseudonymizer(b"run key " * 4), Pseudonymizer(b"another key " * 3)
    first = keyed_noise(key, "1.2.3.4", 40)
    assert first.dtype == np.float32 and first.shape == (40,) and np.abs(first).max() <= 1.0
    assert np.array_equal(first, keyed_noise(Pseudonymizer(b"run key " * 4), "1.2.3.4", 40))
    assert not np.allclose(first, keyed_noise(other, "1.2.3.4", 40))
    assert not np.allclose(first, keyed_noise(key, "1.2.3.5", 40))


def test_keyed_transform_is_the_identity_at_zero_noise_and_rotates_in_physical_proportions():
    from deid.train.keyed import KeyedTransform, Magnitudes

    magnitudes = Magnitudes(rotation=90, scale=0.1, shift=0.1, elastic=0.05, intensity=0.2)
    transform = KeyedTransform(magnitudes)
    image = torch.rand(1, 1, 40, 60, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(transform(image, torch.zeros(1, magnitudes.noise_size)), image, atol=1e-5)
    # A quarter turn of a horizontal bar through the centre of a landscape image is a vertical bar.
    bar = torch.zeros(1, 1, 41, 61)
    bar[..., 20, 20:41] = 1.0
    noise = torch.zeros(1, magnitudes.noise_size)
    noise[0, 0] = 1.0
    turned = KeyedTransform(Magnitudes(rotation=90, scale=0, shift=0))(bar, noise)
    assert turned[0, 0, 10:31, 30].min() > 0.99 and turned[0, 0, 20, 20:41].sum() < 1.5


def test_a_keyed_transform_is_measured_under_several_keys(tmp_path):
    """``deid model evaluate --keys 2``: every attacker's list and the maximum hold one value per
    key, and the keys give different images (so different figures); --keys is for keyed transforms only."""
    from click.testing import CliRunner
    from test_train_gpu_script import tiny_cxr

    from deid.cli import main

    tiny_cxr(tmp_path / "shared" / "cxr")
    args = ["model", "evaluate", "--shared", str(tmp_path / "shared"), "--work", str(tmp_path / "work"),
            "--preset", "toy", "--runs", "0", "--min-genuine-pairs", "1"]
    done = CliRunner().invoke(main, [*args, "--keys", "2", "keyed:r12-s0.12-t0.09-e0.06g4-i0.2g3"])
    assert done.exit_code == 0, done.output
    result = json.loads((tmp_path / "work" / "eval-keyed-r12-s0.12-t0.09-e0.06g4-i0.2g3-keys2.json").read_text())
    assert result["keys"] == 2 and result["reid"]["keys"] == 2
    assert len(result["reid"]["max"]["weighted"]) == 2
    ncc32 = result["reid"]["attackers"]["ncc32"]["pooled"]
    assert len(ncc32) == 2 and ncc32[0] != ncc32[1]
    assert len(result["classification"]["auc_mean_by_key"]) == 2

    refused = CliRunner().invoke(main, [*args, "--keys", "2", "real"])
    assert refused.exit_code == 2 and "keyed transform" in refused.output
