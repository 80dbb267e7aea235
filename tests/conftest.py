"""Shared fixtures: the shared data folder, a key, and small synthetic DICOM objects with fake PHI."""

from __future__ import annotations

import csv
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

REPO = Path(__file__).resolve().parents[1]


def shared_dir() -> Path | None:
    """The shared data folder ($DEID_SHARED, default ../shared), or None when absent."""
    path = Path(os.environ.get("DEID_SHARED", REPO.parent / "shared"))
    return path if path.is_dir() else None


@pytest.fixture
def shared() -> Path:
    path = shared_dir()
    if path is None:
        pytest.skip("shared data not found: set DEID_SHARED to the folder holding corpus/ and standard/")
    return path


@dataclass(frozen=True)
class CorpusRun:
    """The shared corpus through one ``deid run``: its input folder, output folder and files.csv rows."""

    inputs: Path
    out: Path
    rows: list[dict[str, str]]

    def row(self, src: str) -> dict[str, str]:
        return next(row for row in self.rows if row["input"] == src)


#: The corpus runs the tests share, each once per session on first use: the Basic profile with the
#: text stage and no whole-image stage (test_text's CONFIG; test_deform covers that stage), and
#: the research profile header-only.
CORPUS_CONFIGS = {"basic": {"pixels": "none"}, "research": {"header_only": True}}


@pytest.fixture(scope="session")
def corpus_runs(tmp_path_factory):
    """``corpus_runs(profile)``: the :class:`CorpusRun` of :data:`CORPUS_CONFIGS` ``[profile]``."""
    from deid.pipeline import RunConfig, discover, run

    shared = shared_dir()
    if shared is None:
        pytest.skip("shared data not found: set DEID_SHARED to the folder holding corpus/")
    done: dict[str, CorpusRun] = {}

    def corpus_run(profile: str) -> CorpusRun:
        if profile not in done:
            out = tmp_path_factory.mktemp(f"corpus-{profile}") / "out"
            summary = run(RunConfig(profile, (), KEY, **CORPUS_CONFIGS[profile]), shared / "corpus", out, jobs=2)
            rows = list(csv.DictReader((out.parent / "out.audit" / "files.csv").open()))
            assert sum(summary.counts.values()) == len(discover(shared / "corpus")) == len(rows)
            done[profile] = CorpusRun(shared / "corpus", out, rows)
        return done[profile]

    return corpus_run


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "key"
    path.write_text("0123456789abcdef0123456789abcdef\n")
    path.chmod(0o600)
    return path


KEY = b"0123456789abcdef0123456789abcdef"


def make_ct(
    patient_name: str = "DOE^JOHN",
    patient_id: str = "MRN445566",
    sop_uid: str = "1.2.826.0.1.3680043.8.498.1001",
    study_uid: str = "1.2.826.0.1.3680043.8.498.2001",
    series_uid: str = "1.2.826.0.1.3680043.8.498.3001",
    charset: str | None = None,
) -> Dataset:
    """A small CT image with fake PHI in the places exports usually carry it."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    if charset:
        ds.SpecificCharacterSet = charset
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = "1.2.826.0.1.3680043.8.498.4001"
    ds.Modality = "CT"
    ds.Manufacturer = "ACME"
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = "19610412"
    ds.PatientSex = "M"
    ds.PatientAge = "063Y"
    ds.PatientAddress = "12 Elm Street, Springfield"
    ds.AccessionNumber = "ACC99887"
    ds.InstitutionName = "Springfield General"
    ds.StationName = "CTSTATION7"
    ds.DeviceSerialNumber = "SN-778899"
    ds.ReferringPhysicianName = "HOUSE^GREGORY"
    ds.StudyDate = "20240301"
    ds.StudyTime = "101500"
    ds.SeriesDate = "20240301"
    ds.AcquisitionDateTime = "20240301101702.5"
    ds.StudyID = "S1234"
    ds.StudyDescription = "CT CHEST for DOE"
    ds.ImageComments = "patient MRN445566 moved"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.BurnedInAnnotation = "NO"
    ref = Dataset()
    ref.ReferencedSOPClassUID = CTImageStorage
    ref.ReferencedSOPInstanceUID = "1.2.826.0.1.3680043.8.498.1002"
    ds.ReferencedImageSequence = Sequence([ref])
    # three levels deep: Request Attributes > Referenced Study > an item with a name and a date
    inner = Dataset()
    inner.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
    inner.ReferencedSOPInstanceUID = study_uid
    innermost = Dataset()
    innermost.PersonName = "DOE^JOHN"
    innermost.Date = "20240229"
    inner.ContentSequence = Sequence([innermost])
    request = Dataset()
    request.RequestedProcedureID = "RP-5566"
    request.ScheduledProcedureStepID = "SPS-5566"
    request.ReferencedStudySequence = Sequence([inner])
    ds.RequestAttributesSequence = Sequence([request])
    block = ds.private_block(0x0029, "ACME HOSPITAL PRIVATE", create=True)
    block.add_new(0x01, "LO", "DOE JOHN MRN445566")
    ds.Rows = ds.Columns = 8
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    ds.ImagePositionPatient = [0, 0, 0]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [1, 1]
    ds.SliceThickness = 1
    ds.PixelData = np.arange(64, dtype=np.int16).reshape(8, 8).tobytes()
    return ds


def write(ds: Dataset, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


_ERROR = re.compile(r"^Error - (.*)$", re.MULTILINE)


def iod_errors(path: Path) -> set[str]:
    """The errors dciodvfy (Debian dicom3tools) reports for ``path``, values left out."""
    result = subprocess.run(["dciodvfy", "-new", str(path)], capture_output=True, text=True, errors="replace")
    errors = (re.sub(r"<[^>]*>\s*$|\s+", " ", e).strip() for e in _ERROR.findall(result.stderr))
    # an unreadable stream (dciodvfy cannot inflate deflated files) names a tag of random bytes
    return {re.sub(r"^</\([0-9a-f]{4},[0-9a-f]{4}\)>", "</(unreadable)>", e) for e in errors}
