"""The training code: data and splits, the operator, seeding, the protocol's AUC, the export."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the train extra (torch) is not installed")
pytestmark = pytest.mark.train

from deid.train import loops  # noqa: E402
from deid.train.data import labels_of, load_split, shared_cxr  # noqa: E402
from deid.train.metrics import roc_auc  # noqa: E402
from deid.train.networks import UNet, generator_gflop, parameter_count, warp  # noqa: E402
from deid.train.presets import preset  # noqa: E402

TINY = dataclasses.replace(preset("cpu"), size=32, generator_size=32, generator=(4, 2), pretrain_epochs=1)


@pytest.fixture(scope="module")
def cxr(request) -> Path:
    from tests.conftest import shared_dir

    shared = shared_dir()
    if shared is None or not (shared / "cxr" / "images.csv").is_file():
        pytest.skip("shared/cxr not found: set DEID_SHARED to the folder holding cxr/")
    return shared_cxr(shared)


def test_paper_generator_has_the_published_size():
    generator = UNet(32, 4)
    assert parameter_count(generator) == 7_762_498
    assert generator_gflop(generator, 256) == pytest.approx(24.07, abs=0.01)
    assert generator_gflop(UNet(16, 4), 256) == pytest.approx(24.07 / 4, abs=0.05)


def test_splits_are_patient_disjoint_and_pairs_stay_within_a_source(cxr):
    train, test = load_split(cxr, "train", 32), load_split(cxr, "test", 32)
    assert not set(train.patients) & set(test.patients)
    genuine = test.genuine_pairs()
    assert len(genuine) == 490  # the README's count of test genuine pairs
    assert (test.patients[genuine[:, 0]] == test.patients[genuine[:, 1]]).all()
    impostors = train.impostor_pairs(500, np.random.default_rng(0))
    assert (train.sources[impostors[:, 0]] == train.sources[impostors[:, 1]]).all()
    assert (train.patients[impostors[:, 0]] != train.patients[impostors[:, 1]]).all()
    pairs, is_genuine = test.all_within_source_pairs()
    assert is_genuine.sum() == 490 and len(pairs) == 490 + 52_058


def test_labels_follow_the_finding_text():
    assert labels_of("Pneumonia (bacterial)")[0].tolist() == [1, 1, 0]
    assert labels_of("COVID-19")[0].tolist() == [1, 0, 1]
    assert labels_of("No Finding")[0].tolist() == [0, 0, 0]
    targets, mask = labels_of("Effusion")
    assert targets.tolist() == [1, 0, 0] and mask.tolist() == [1, 0, 0]
    assert labels_of("todo")[1].sum() == 0


def test_roc_auc_matches_hand_computed_values():
    labels = np.array([0, 0, 1, 1])
    assert roc_auc(labels, np.array([0.1, 0.4, 0.35, 0.8])) == pytest.approx(0.75)
    assert roc_auc(labels, np.array([0.5, 0.5, 0.5, 0.5])) == pytest.approx(0.5)
    assert roc_auc(labels, np.array([0.9, 0.8, 0.2, 0.1])) == pytest.approx(0.0)
    assert np.isnan(roc_auc(np.array([1, 1]), np.array([0.2, 0.3])))


def test_mu_zero_is_the_identity_at_every_size():
    deformation = loops.new_deformation(TINY, 0.0).eval()
    for h, w in ((32, 32), (97, 61)):
        x = torch.rand(1, 1, h, w)
        with torch.no_grad():
            assert torch.allclose(deformation(x), x, atol=1e-5)


def test_displacement_is_bounded_by_mu_up_to_the_border():
    # The released operator smooths the absolute grid with zero padding and pulls the outer four
    # pixels up to ~50 px inward; smoothing the displacement keeps every pixel within mu.
    mu = 0.01
    deformation = loops.new_deformation(TINY, mu).eval()
    torch.nn.init.constant_(deformation.generator.head.bias, 10.0)  # saturate tanh: field = 1
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        field = deformation.displacement(x)
    assert field.abs().max() <= mu + 1e-6
    assert field[..., 0, :].abs().max() > 0  # the border moves, but never beyond mu


def test_warp_moves_content_by_the_displacement():
    x = torch.zeros(1, 1, 9, 9)
    x[..., 4, 4] = 1.0
    shift = torch.zeros(1, 2, 9, 9)
    shift[:, 0] = 2.0 / 8  # each pixel samples one to its left: content moves one pixel right
    moved = warp(x, shift)
    assert moved[0, 0, 4, 5] == pytest.approx(1.0, abs=1e-5)
    assert moved[0, 0, 4, 4] == pytest.approx(0.0, abs=1e-5)


def test_pretraining_is_seeded(cxr):
    train, val = load_split(cxr, "val", TINY.size), load_split(cxr, "val", TINY.size)
    states = []
    for _ in range(2):
        deformation = loops.new_deformation(TINY, 0.01, seed=3)
        loops.pretrain_generator(TINY, deformation, train, val, seed=3)
        states.append(deformation.generator.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


@pytest.mark.parametrize("keep_best", [True, False])
def test_adversarial_training_reports_its_steps_and_the_step_kept(cxr, keep_best):
    from structlog.testing import capture_logs

    val = load_split(cxr, "val", TINY.size)
    # critics this fast make the validation loss rise after the first epoch
    p = dataclasses.replace(TINY, adversarial_epochs=4, adversarial_pairs=40, batch=32, critic_lr=3e-2)
    deformation = loops.new_deformation(p, 0.05, seed=3)
    with capture_logs() as logs:
        _, steps, kept_step = loops.train_adversarial(p, deformation, loops.new_verifier(p), loops.new_classifier(p),
                                                      val, val, seed=3, keep_best=keep_best)
    losses = [e["val_loss"] for e in logs if e.get("network") == "adversarial"]
    assert steps == 4 * 2 and int(np.argmin(losses)) < 3
    assert kept_step == (2 * (int(np.argmin(losses)) + 1) if keep_best else steps)


def test_export_keeps_height_and_width_symbolic_and_matches_torch(tmp_path):
    pytest.importorskip("onnxruntime")
    from deid.train.export import CHECK_SIZES, export

    deformation = loops.new_deformation(TINY, 0.01)
    torch.nn.init.normal_(deformation.generator.head.weight, std=1.0)
    checks = export(deformation.eval(), tmp_path / "deform.onnx")
    assert set(checks["parity"]) == {f"{h}x{w}" for h, w in CHECK_SIZES}
    assert max(checks["parity"].values()) <= 1e-4


def test_shipped_model_is_symbolic_and_matches_its_checkpoint():
    """The shipped graph against torch: a learned generator against its checkpoint (models/deform.pt),
    a keyed random transform against :class:`KeyedTransform` with its metadata's magnitudes."""
    ort = pytest.importorskip("onnxruntime")
    import json

    import onnx

    from deid.pixels.deform import default_model
    from deid.train.commands import load_generator
    from deid.train.export import _radiograph_like
    from deid.train.keyed import KeyedTransform, Magnitudes

    model = default_model()
    metadata = json.loads(model.with_suffix(".json").read_text())
    keyed = metadata.get("keyed") is True
    if not keyed and not model.with_suffix(".pt").is_file():
        pytest.skip("models/deform.pt not found: `deid model export` writes it beside the ONNX graph")
    dims = [d.dim_param or d.dim_value for d in onnx.load(str(model)).graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 1, "height", "width"]
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(1)
    if keyed:
        transform = KeyedTransform(Magnitudes(**metadata["magnitudes"]))
    else:
        deformation, _ = load_generator(model.with_suffix(".pt"))
    for h, w in ((256, 256), (1200, 1024), (2500, 2048)):
        image = _radiograph_like(rng, h, w)
        if keyed:
            noise = rng.uniform(-1, 1, (1, metadata["noise_size"])).astype(np.float32)
            got = session.run(["warped"], {"image": image, "noise": noise})[0]
            with torch.no_grad():
                expected = transform(torch.from_numpy(image), torch.from_numpy(noise)).numpy()
        else:
            got = session.run(["warped"], {"image": image})[0]
            with torch.no_grad():
                expected = deformation(torch.from_numpy(image)).numpy()
        assert got.shape == image.shape
        assert np.abs(got - expected).max() <= 1e-4
        assert np.abs(got - image).max() > 1e-3  # the transform does move pixels
