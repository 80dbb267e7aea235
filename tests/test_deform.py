"""The whole-image pixel stages: the learned deformation (models/deform.onnx) and DP-Pix, on a real
full-resolution chest radiograph wrapped as CR with fake PHI."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.uid import ComputedRadiographyImageStorage, JPEG2000Lossless

from conftest import KEY, make_ct, shared_dir, write
from deid.cli import main
from deid.pipeline import RunConfig, run
from deid.pixels.derive import UnitScale
from deid.pixels.dppix import dp_pix
from deid.pixels.eligibility import load_eligibility
from deid.process import process_file
from deid.release import ReleaseMismatch

pytest.importorskip("onnxruntime", reason="the pixel stages need ONNX Runtime (the cpu extra)")
RADIOGRAPH = "cxr/fullres/covid__covid-19-pneumonia-35-1.jpg"  # 2500x2048, PA
OTHER_KEY = b"fedcba9876543210fedcba9876543210"


def radiograph(pixels: np.ndarray, photometric: str, bits: int, view: str | None = "PA", uid: str = "1") -> Dataset:
    """A CR chest image of ``pixels`` with the fake PHI of :func:`conftest.make_ct`."""
    ds = make_ct(sop_uid=f"1.2.826.0.1.3680043.8.498.9{uid}")
    ds.Modality = "CR"
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = ComputedRadiographyImageStorage
    for keyword in ("RescaleIntercept", "RescaleSlope", "ImagePositionPatient", "ImageOrientationPatient",
                    "PixelSpacing", "SliceThickness", "FrameOfReferenceUID"):
        delattr(ds, keyword)
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.BodyPartExamined = "CHEST"
    if view:
        ds.ViewPosition = view
    ds.set_pixel_data(pixels, photometric_interpretation=photometric, bits_stored=bits)
    return ds


@pytest.fixture(scope="module")
def chest() -> np.ndarray:
    """The radiograph as 8-bit grey (PIL, as read from the shared set)."""
    Image = pytest.importorskip("PIL.Image", reason="Pillow reads the shared radiograph")
    shared = shared_dir()
    if shared is None or not (shared / RADIOGRAPH).is_file():
        pytest.skip(f"shared data not found: set DEID_SHARED to the folder holding {RADIOGRAPH}")
    return np.asarray(Image.open(shared / RADIOGRAPH).convert("L"))


@pytest.fixture(scope="module")
def inputs(chest: np.ndarray, tmp_path_factory) -> Path:
    """12-bit MONOCHROME2 PA, 16-bit MONOCHROME1 without a view, a lateral view, and a CT."""
    root = tmp_path_factory.mktemp("deform") / "in"
    grey = chest.astype(np.uint16)
    write(radiograph(grey * 16, "MONOCHROME2", 12, uid="1"), root / "pa12.dcm")
    write(radiograph(65535 - grey * 257, "MONOCHROME1", 16, view=None, uid="2"), root / "mono1.dcm")
    write(radiograph(grey * 16, "MONOCHROME2", 12, view="LL", uid="3"), root / "lateral.dcm")
    write(make_ct(), root / "ct.dcm")
    return root


@pytest.fixture(scope="module")
def model():
    from deid.pixels.deform import default_model

    if not default_model().is_file():
        pytest.skip("models/deform.onnx not found: the exported deformation model comes from `deid model export`")
    return default_model()


def outputs(out: Path) -> dict[str, Dataset]:
    """Input name to output data set, through the run's private files.csv."""
    rows = csv.DictReader((out.with_name(out.name + ".audit") / "files.csv").open())
    return {row["input"]: dcmread(out / row["output"]) for row in rows if row["status"] == "written"}


@pytest.fixture(scope="module")
def deformed(model, inputs: Path, tmp_path_factory) -> Path:
    """One ``deid run --pixels deform``."""
    work = tmp_path_factory.mktemp("deformed")
    (work / "key").write_bytes(KEY)
    arguments = ["run", str(inputs), str(work / "out"), "--key-file", str(work / "key"), "-j", "1",
                 "--pixels", "deform"]
    result = CliRunner().invoke(main, arguments)
    assert result.exit_code == 0, result.output
    return work / "out"


@pytest.mark.parametrize("name", ["pa12.dcm", "mono1.dcm"])
def test_eligible_radiograph_is_warped_a_little_and_marked_derived(deformed: Path, inputs: Path, name: str):
    original, out = dcmread(inputs / name), outputs(deformed)[name]
    before, after = original.pixel_array, out.pixel_array
    assert after.shape == before.shape and after.dtype == before.dtype
    for keyword in ("BitsStored", "PixelRepresentation", "PhotometricInterpretation"):
        assert out[keyword].value == original[keyword].value
    assert out.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
    difference = np.abs(after.astype(np.int64) - before.astype(np.int64))
    value_range = int(before.max()) - int(before.min())
    assert 0 < difference.mean() < 0.05 * value_range  # changed, but the same radiograph
    assert after.min() >= before.min() and after.max() <= before.max()
    assert list(out.ImageType) == ["DERIVED", "PRIMARY"]
    assert "deid: learned deformation" in out.DerivationDescription
    assert [c.CodeValue for c in out.DerivationCodeSequence] == ["113085"]
    assert [c.CodeValue for c in out.DeidentificationMethodCodeSequence].count("113101") == 1


def test_manifest_records_the_stage_and_the_provider(deformed: Path):
    rows = list(csv.DictReader((deformed / "manifest.csv").open()))
    changed = [r for r in rows if "deform" in r["stages"].split("+")]
    assert len(changed) == 2
    assert all("ExecutionProvider" in r["pixel_notes"] for r in changed)
    # The notes name the model and what it was measured to do (or that nothing was).
    from deid.pixels.deform import load_model_info
    from deid.shipped import default_model

    name = load_model_info(default_model()).name
    assert all(f"deformation {name} " in r["pixel_notes"] for r in changed)
    assert all("re-ID AUC" in r["pixel_notes"] or "no measured privacy" in r["pixel_notes"] for r in changed)


def test_the_review_page_shows_each_warped_radiograph_before_and_after(deformed: Path):
    audit = deformed.with_name(deformed.name + ".audit")
    tokens = {row["input"]: row["token"] for row in csv.DictReader((audit / "files.csv").open())}
    page = (audit / "review" / "index.html").read_text()
    assert page.count('class="object changed"') == 2
    for name in ("pa12.dcm", "mono1.dcm"):
        before, after = (audit / "review" / "img" / f"{tokens[name]}-{side}.png" for side in ("before", "after"))
        assert f'data-token="{tokens[name]}"' in page and before.read_bytes() != after.read_bytes()


def test_other_objects_pass_the_stage_untouched(deformed: Path, inputs: Path):
    written = outputs(deformed)
    for name in ("lateral.dcm", "ct.dcm"):
        assert written[name].PixelData == dcmread(inputs / name).PixelData
        assert "DERIVED" not in written[name].ImageType


def test_same_key_gives_byte_identical_output(deformed: Path, inputs: Path, tmp_path: Path):
    run(RunConfig("basic", (), KEY, pixels="deform"), inputs, tmp_path / "out", jobs=1)
    for path in deformed.rglob("*.dcm"):
        assert (tmp_path / "out" / path.relative_to(deformed)).read_bytes() == path.read_bytes()


def test_deid_verify_finds_no_leak(deformed: Path, inputs: Path):
    result = CliRunner().invoke(main, ["verify", str(deformed), "--against", str(inputs)])
    assert result.exit_code == 0, result.output


@pytest.mark.corpus
@pytest.mark.ocr
def test_masked_text_stays_unreadable_after_the_deformation(model, shared: Path, tmp_path: Path):
    from deid.pixels.ocr import read_text
    from deid.pixels.render import to_display

    src = "presidio/0_ORIGINAL_compressed.dcm"
    result = process_file(RunConfig("basic", (), KEY, pixels="deform"), shared / "corpus", tmp_path, src)
    assert result.status == "written" and result.stages == ("header", "text", "deform"), result.reason
    out = dcmread(tmp_path / result.dst)
    text = " ".join(line.text for line in read_text(to_display(out.pixel_array, out))).upper()
    for word in ("DAVIDSON", "DOUGLAS", "2012", "1976"):  # the burned-in PHI of the Presidio sample
        assert word not in text


def test_pixels_none_keeps_pixel_data_byte_for_byte(inputs: Path, tmp_path: Path):
    config = RunConfig("basic", (), KEY, pixels="none")
    result = process_file(config, inputs, tmp_path, "pa12.dcm")
    assert result.status == "written" and result.stages == ("header",)
    assert dcmread(tmp_path / result.dst).PixelData == dcmread(inputs / "pa12.dcm").PixelData


def test_dp_pix_noise_follows_the_key(inputs: Path, tmp_path: Path):
    def dp_pixels(key: bytes, folder: str) -> Dataset:
        result = process_file(RunConfig("basic", (), key, pixels="dp-pix"), inputs, tmp_path / folder, "mono1.dcm")
        assert result.status == "written" and result.stages == ("header", "dp-pix"), result.reason
        return dcmread(tmp_path / folder / result.dst)

    first = dp_pixels(KEY, "a")
    assert first.PhotometricInterpretation == "MONOCHROME1" and first.BitsStored == 16
    assert "deid: DP-Pix (b=8, epsilon=0.1, m=1)" in first.DerivationDescription
    assert dp_pixels(KEY, "b").PixelData == first.PixelData
    assert dp_pixels(OTHER_KEY, "c").PixelData != first.PixelData


def test_changed_pixels_choice_needs_a_rebuild_that_reprocesses(chest: np.ndarray, tmp_path: Path):
    write(radiograph(chest[::8, ::8].astype(np.uint16) * 16, "MONOCHROME2", 12), tmp_path / "in" / "small.dcm")
    assert run(RunConfig("basic", (), KEY, pixels="none"), tmp_path / "in", tmp_path / "out", jobs=1).processed == 1
    assert run(RunConfig("basic", (), KEY, pixels="none"), tmp_path / "in", tmp_path / "out", jobs=1).processed == 0
    with pytest.raises(ReleaseMismatch, match="pixels whole_image none"):  # the release was made without it
        run(RunConfig("basic", (), KEY, pixels="dp-pix"), tmp_path / "in", tmp_path / "out", jobs=1)
    again = run(RunConfig("basic", (), KEY, pixels="dp-pix"), tmp_path / "in", tmp_path / "out", jobs=1, rebuild=True)
    assert again.processed == 1
    assert "dp-pix" in (tmp_path / "out" / "manifest.csv").read_text()


def test_undecodable_eligible_image_is_quarantined(tmp_path: Path):
    ds = radiograph(np.zeros((64, 64), np.uint16), "MONOCHROME2", 12)
    ds.BurnedInAnnotation = "NO"
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
    ds.PixelData = encapsulate([b"\xff\x4f\xff\x51 not a codestream"])
    write(ds, tmp_path / "in" / "broken.dcm")
    result = process_file(RunConfig("basic", (), KEY, pixels="dp-pix"), tmp_path / "in", tmp_path / "out", "broken.dcm")
    assert result.status == "quarantined"
    assert result.reason.startswith("pixel data cannot be decoded for the dp-pix stage")


def test_dry_run_lists_the_pixel_stage_and_the_models_measured_privacy(model, inputs: Path, tmp_path: Path):
    from deid.shipped import default_pixels, model_privacy

    (tmp_path / "key").write_bytes(KEY)
    args = ["run", str(inputs), str(tmp_path / "out"), "--key-file", str(tmp_path / "key"), "--dry-run"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert f"pixels: {default_pixels()}" in result.output
    deform = CliRunner().invoke(main, [*args, "--pixels", "deform"])
    assert "4. deform: warp CR/DX chest" in deform.output
    privacy = model_privacy(model)
    if privacy is None:
        assert "no measured privacy on record" in deform.output
    else:
        assert f"measured max-attacker re-ID AUC {privacy['reid_auc']:.3f}" in deform.output
    warnings = [line for line in deform.output.splitlines() if "no measured privacy gain" in line]
    assert len(warnings) == (0 if privacy and privacy["milestone"] else 1)
    assert "models/deform.md" in "".join(warnings or ["models/deform.md"])
    listed = CliRunner().invoke(main, [*args, "--pixels", "dp-pix"])
    assert "4. dp-pix: DP-Pix (cells of 8 px" in listed.output
    assert "no measured privacy gain" not in listed.output


def test_missing_model_is_a_configuration_error(inputs: Path, tmp_path: Path):
    (tmp_path / "key").write_bytes(KEY)
    (tmp_path / "model.onnx").write_bytes(b"not a model")
    result = CliRunner().invoke(main, ["run", str(inputs), str(tmp_path / "out"), "--key-file", str(tmp_path / "key"),
                                       "--pixels", "deform", "--deform-model", str(tmp_path / "model.onnx")])
    assert result.exit_code == 3
    assert "metadata" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()  # raised in the workers; the run leaves no empty OUT
    ignored = CliRunner().invoke(main, ["run", str(inputs), str(tmp_path / "out"), "--key-file", str(tmp_path / "key"),
                                        "--pixels", "none", "--deform-model", str(tmp_path / "model.onnx")])
    assert ignored.exit_code == 3 and "--deform-model applies to --pixels deform" in ignored.output


# -- eligibility, the [0, 1] map and DP-Pix, without the model --------------------------------

def test_eligibility_rules(tmp_path: Path):
    rules = load_eligibility()
    ds = radiograph(np.zeros((16, 16), np.uint16), "MONOCHROME2", 12)
    assert rules.matches(ds)
    ds.ViewPosition = "LL"
    assert not rules.matches(ds)
    del ds.ViewPosition, ds.BodyPartExamined, ds.StudyDescription
    assert not rules.matches(ds)
    ds.SeriesDescription = "Chest, 2 views"
    assert rules.matches(ds)  # no Body Part Examined: a kept description naming the chest counts
    ds.BodyPartExamined = "SKULL"
    assert not rules.matches(ds)
    site = tmp_path / "site.toml"
    site.write_text(
        "modalities = ['DX']\nbody_parts = ['CHEST']\ndescriptions = []\ndescription_words = []\n"
        "views = ['PA']\nview_may_be_absent = false\nphotometric = ['MONOCHROME2']\n"
    )
    assert not load_eligibility(site).matches(radiograph(np.zeros((16, 16), np.uint16), "MONOCHROME2", 12))
    site.write_text("modalities = ['CR']\n")
    with pytest.raises(ValueError, match="missing"):
        load_eligibility(site)


@pytest.mark.parametrize(
    ("dtype", "bits", "signed", "photometric"),
    [(np.uint16, 12, 0, "MONOCHROME2"), (np.int16, 16, 1, "MONOCHROME1"), (np.uint8, 8, 0, "MONOCHROME1")],
)
def test_unit_scale_round_trips_exactly(dtype, bits, signed, photometric):
    rng = np.random.default_rng(3)
    low = -(1 << (bits - 1)) if signed else 0
    stored = rng.integers(low, low + (1 << bits), (64, 48)).astype(dtype)
    ds = Dataset()
    ds.BitsStored, ds.PixelRepresentation, ds.PhotometricInterpretation = bits, signed, photometric
    scale = UnitScale.of(stored, ds)
    unit = scale.to_unit(stored)
    assert unit.dtype == np.float32 and unit.min() == 0 and unit.max() == 1
    assert (unit[stored == stored.max()] == (0 if photometric == "MONOCHROME1" else 1)).all()
    assert np.array_equal(scale.to_stored(unit, stored.dtype), stored)


def test_dp_pix_pixelizes_with_laplace_noise_of_the_published_scale():
    rng = np.random.default_rng(0)
    image = rng.random((2, 1, 256, 250)).astype(np.float32)
    quiet = dp_pix(image, 8, 1e12, 1.0, rng)  # no noise to speak of: the cell means
    assert quiet.shape == image.shape and quiet.dtype == np.float32
    assert np.allclose(quiet[0, 0, :8, :8], image[0, 0, :8, :8].mean(), atol=1e-6)
    assert np.allclose(quiet[1, 0, -8:, -2:], image[1, 0, -8:, -2:].mean(), atol=1e-6)  # a 2-wide edge cell
    flat = np.full((4096, 4096), 0.5, np.float32)
    noisy = dp_pix(flat, 8, 0.1, 1.0, np.random.default_rng(1))
    assert noisy.min() >= 0 and noisy.max() <= 1
    # Laplace(0, m/(b²ε) = 1/6.4): the median of |noise| is ln 2/6.4, below the clipping at 0.5
    assert np.median(np.abs(noisy[::8, ::8] - 0.5)) == pytest.approx(np.log(2) / 6.4, rel=0.02)
    assert np.array_equal(dp_pix(flat[:64, :64], 8, 0.1, 1.0, np.random.default_rng(5)),
                          dp_pix(flat[:64, :64], 8, 0.1, 1.0, np.random.default_rng(5)))


@pytest.mark.train
def test_a_keyed_transform_follows_the_run_key(inputs: Path, tmp_path: Path):
    """A keyed random transform exported by ``deid model export keyed:...``: the same key gives the
    same pixels, another key other pixels, and the graph matches torch at any size."""
    pytest.importorskip("torch", reason="exporting a transform needs the train extra (torch)")
    model = tmp_path / "keyed.onnx"
    exported = CliRunner().invoke(main, ["model", "export", "keyed:r8-s0.08-t0.06-e0.04g4-i0.2g3", "--out", str(model)])
    assert exported.exit_code == 0, exported.output
    metadata = json.loads(model.with_suffix(".json").read_text())
    assert metadata["keyed"] and max(metadata["parity"].values()) <= 1e-4 and "privacy" not in metadata

    def release(key: bytes, name: str) -> dict[str, Dataset]:
        (tmp_path / f"{name}.key").write_bytes(key)
        result = CliRunner().invoke(main, ["run", str(inputs), str(tmp_path / name), "--key-file",
                                           str(tmp_path / f"{name}.key"), "-j", "1", "--pixels", "deform",
                                           "--deform-model", str(model)])
        assert result.exit_code == 0, result.output
        return outputs(tmp_path / name)

    first, again, other = release(KEY, "first"), release(KEY, "again"), release(OTHER_KEY, "other")
    original = dcmread(inputs / "pa12.dcm").pixel_array.astype(np.int32)
    warped = first["pa12.dcm"].pixel_array.astype(np.int32)
    assert np.abs(warped - original).mean() > 16  # a visible change of 12-bit values
    assert np.array_equal(warped, again["pa12.dcm"].pixel_array)
    assert not np.array_equal(warped, other["pa12.dcm"].pixel_array)
    assert "keyed random deformation" in first["pa12.dcm"].DerivationDescription
    assert np.array_equal(first["lateral.dcm"].pixel_array, dcmread(inputs / "lateral.dcm").pixel_array)
