"""Generate a hospital-like DICOM export with fake PHI, for the sample, the tests and the benchmarks.

Usage::

    python benchmarks/make_corpus.py --out DIR [--scale sample|small|medium|large] [--seed N]

Per patient: one to three studies, each with a CT or MR series, a CR or DX radiograph (some
MONOCHROME1, names and dates burned in), an ultrasound with burned-in text and declared regions,
some series RLE-compressed, and a Basic Text SR naming the patient and referencing the images.
Headers carry the PHI a real export carries (names in several character sets, IDs, birth date,
address, phone, physicians, institution, station, device serial, dates, free text, a private
block, nested request sequences). Folder names carry the patient's name and MRN. A few non-DICOM
files and one truncated file test robustness. ``DIR/phi.json`` lists every fake PHI value written.
Everything is a function of the seed.
"""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    BasicTextSRStorage,
    ComputedRadiographyImageStorage,
    CTImageStorage,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MRImageStorage,
    RLELossless,
    UltrasoundImageStorage,
    generate_uid,
)

#: Per scale: patients, slices per CT/MR series, CT/MR matrix, radiograph matrix.
SCALES = {
    "sample": (3, 3, 64, 192),
    "small": (10, 20, 256, 1024),
    "medium": (40, 40, 512, 2048),
    "large": (160, 40, 512, 2048),
}
FAMILY = ["MILLER", "GARCIA", "NGUYEN", "OKAFOR", "JANSSEN", "ROSSI", "KOWALSKI", "TANAKA", "DUBOIS", "SILVA"]
GIVEN = ["BEVERLY", "JAMAL", "MEI", "OLUWASEUN", "PIETER", "GIULIA", "AGNIESZKA", "HIROSHI", "CLAIRE", "TIAGO"]
LATIN1_NAMES = [("MÜLLER", "JÖRG"), ("GONZÁLEZ", "JOSÉ"), ("LEFÈVRE", "ANAÏS")]
STREETS = ["Elm Street", "Harbour Road", "Lindenallee", "Via Roma", "Rue des Lilas"]
CITIES = ["Springfield", "Rivertown", "Lakeside", "Hillview"]
PHYSICIANS = ["HOUSE^GREGORY", "QUINN^MICHAELA", "KILDARE^JAMES", "GREY^MEREDITH"]
INSTITUTIONS = ["Springfield General Hospital", "Rivertown Medical Center", "St. Agnes Clinic"]
ROOT = "1.2.826.0.1.3680043.8.498."


@dataclass
class Patient:
    """The fake identity of one patient."""

    name: str
    patient_id: str
    birth_date: str
    sex: str
    address: str
    phone: str
    charset: str | None
    institution: str
    physician: str

    @property
    def folder(self) -> str:
        return f"{self.name.replace('^', '_')}_{self.patient_id}"


def make_patient(rng: random.Random, index: int) -> Patient:
    if index % 7 == 3:
        family, given = LATIN1_NAMES[index % len(LATIN1_NAMES)]
        charset = "ISO_IR 100"
    else:
        family, given = rng.choice(FAMILY), rng.choice(GIVEN)
        charset = "ISO_IR 192" if index % 5 == 4 else None
    born = date(1930, 1, 1) + timedelta(days=rng.randrange(365 * 70))
    return Patient(
        name=f"{family}^{given}",
        patient_id=f"MRN{rng.randrange(10**6, 10**7)}",
        birth_date=born.strftime("%Y%m%d"),
        sex=rng.choice("MF"),
        address=f"{rng.randrange(1, 200)} {rng.choice(STREETS)}, {rng.choice(CITIES)}",
        phone=f"+1-555-{rng.randrange(1000, 9999)}",
        charset=charset,
        institution=rng.choice(INSTITUTIONS),
        physician=rng.choice(PHYSICIANS),
    )


def uid(rng: random.Random) -> str:
    return generate_uid(prefix=ROOT, entropy_srcs=[str(rng.random())])


def base(patient: Patient, study: dict, sop_class: str, modality: str, rng: random.Random) -> Dataset:
    """The patient, study, equipment and request attributes every object of a study shares."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    if patient.charset:
        ds.SpecificCharacterSet = patient.charset
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = uid(rng)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = study["uid"]
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = study["date"]
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = study["time"]
    ds.AcquisitionDateTime = study["date"] + study["time"]
    ds.AccessionNumber = study["accession"]
    ds.StudyID = study["id"]
    ds.StudyDescription = f"{modality} follow-up {patient.name.split('^')[0]}"
    ds.Modality = modality
    ds.Manufacturer = "ACME MEDICAL"
    ds.ManufacturerModelName = f"ACME {modality} 3000"
    ds.DeviceSerialNumber = f"SN{rng.randrange(10**5, 10**6)}"
    ds.StationName = f"{modality}ROOM{rng.randrange(1, 9)}"
    ds.InstitutionName = patient.institution
    ds.InstitutionAddress = "1 Hospital Plaza, Springfield"
    ds.ReferringPhysicianName = patient.physician
    ds.OperatorsName = "TECH^ALEX"
    ds.PatientName = patient.name
    ds.PatientID = patient.patient_id
    ds.IssuerOfPatientID = "SPRINGFIELD"
    ds.PatientBirthDate = patient.birth_date
    ds.PatientSex = patient.sex
    ds.PatientAge = f"{int(study['date'][:4]) - int(patient.birth_date[:4]):03d}Y"
    ds.PatientAddress = patient.address
    ds.PatientTelephoneNumbers = patient.phone
    other = Dataset()
    other.PatientID = patient.patient_id.replace("MRN", "ALT")
    other.IssuerOfPatientID = "RIVERTOWN"
    other.TypeOfPatientID = "TEXT"
    ds.OtherPatientIDsSequence = Sequence([other])
    referenced_study = Dataset()
    referenced_study.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
    referenced_study.ReferencedSOPInstanceUID = study["uid"]
    request = Dataset()
    request.RequestedProcedureID = f"RP{study['accession']}"
    request.ScheduledProcedureStepID = f"SPS{study['accession']}"
    request.RequestedProcedureDescription = f"{modality} for {patient.name.replace('^', ' ')}"
    request.ReferencedStudySequence = Sequence([referenced_study])
    ds.RequestAttributesSequence = Sequence([request])
    ds.ImageComments = f"Patient {patient.patient_id} tolerated the exam"
    ds.Laterality = ""
    ds.PatientOrientation = ""
    block = ds.private_block(0x0029, "ACME HOSPITAL PRIVATE", create=True)
    block.add_new(0x01, "LO", f"{patient.name} {patient.patient_id}")
    mrn = Dataset()
    mrn.add_new(0x00100020, "LO", patient.patient_id)
    block.add_new(0x02, "SQ", Sequence([mrn]))
    return ds


def set_pixels(ds: Dataset, pixels: np.ndarray, photometric: str, bits: int) -> None:
    ds.set_pixel_data(pixels, photometric_interpretation=photometric, bits_stored=bits, generate_instance_uid=False)


def burn(pixels: np.ndarray, lines: list[tuple[str, int, int]], size: int, value: int) -> np.ndarray:
    """Draw text lines (text, x, y) into a grey uint8/uint16 image or an RGB uint8 image."""
    image = Image.fromarray(pixels if pixels.dtype == np.uint8 else np.zeros(pixels.shape[:2], np.uint8))
    pen = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=size)
    for text, x, y in lines:
        pen.text((x, y), text, fill=(value,) * 3 if pixels.ndim == 3 else value, font=font)
    drawn = np.asarray(image)
    if pixels.dtype == np.uint8:
        return drawn
    out = pixels.copy()
    out[drawn > 0] = value
    return out


def body(rng: np.random.Generator, rows: int, columns: int, top: int) -> np.ndarray:
    """A smooth anatomy-like blob with noise, in 0..top."""
    y, x = np.mgrid[0:rows, 0:columns]
    blob = np.exp(-(((x - columns / 2) / (columns / 3)) ** 2 + ((y - rows / 2) / (rows / 2.5)) ** 2))
    noise = rng.normal(0, 0.04, (rows, columns))
    return np.clip((blob * 0.8 + noise + 0.1) * top, 0, top)


def cross_section(ds: Dataset, slices: int, index: int, matrix: np.ndarray, previous: str | None) -> None:
    ds.Rows, ds.Columns = matrix.shape
    ds.ImagePositionPatient = [0.0, 0.0, float(index * 2)]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [0.7, 0.7]
    ds.SliceThickness = 2.0
    ds.InstanceNumber = index + 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.BurnedInAnnotation = "NO"
    ds.PatientPosition = "HFS"
    ds.PositionReferenceIndicator = ""
    ds.AcquisitionNumber = 1
    if ds.Modality == "CT":
        ds.KVP = 120
    else:
        ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions = "SE", "NONE", ""
        ds.MRAcquisitionType, ds.RepetitionTime, ds.EchoTime = "2D", 500, 15
        ds.EchoTrainLength, ds.MagneticFieldStrength = 1, 1.5
    if previous:
        reference = Dataset()
        reference.ReferencedSOPClassUID = ds.SOPClassUID
        reference.ReferencedSOPInstanceUID = previous
        ds.ReferencedImageSequence = Sequence([reference])
    set_pixels(ds, matrix.astype(np.int16) if ds.Modality == "CT" else matrix.astype(np.uint16), "MONOCHROME2", 12)
    if ds.Modality == "CT":
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1


def generate(out: Path, scale: str, seed: int) -> dict[str, list[str]]:
    patients_n, slices, matrix, radiograph = SCALES[scale]
    rng = random.Random(seed)
    noise = np.random.default_rng(seed)
    volume = {m: (body(noise, matrix, matrix, 1900) + 24).astype(np.int32) for m in ("CT", "MR")}
    phi: dict[str, list[str]] = {}
    file_count = 0
    for p in range(patients_n):
        patient = make_patient(rng, p)
        folder = out / patient.folder
        written: list[str] = []
        for s in range(1 + p % 3):
            day = date(2015, 1, 1) + timedelta(days=rng.randrange(3000))
            study = {
                "uid": uid(rng),
                "date": day.strftime("%Y%m%d"),
                "time": f"{rng.randrange(7, 19):02d}{rng.randrange(60):02d}00",
                "accession": f"A{rng.randrange(10**7, 10**8)}",
                "id": f"S{rng.randrange(1000, 9999)}",
            }
            written += [study["date"], study["accession"]]
            study_dir = folder / f"study{s + 1}_{study['date']}"
            modality = "CT" if (p + s) % 2 == 0 else "MR"
            sop = CTImageStorage if modality == "CT" else MRImageStorage
            series_uid, frame_uid = uid(rng), uid(rng)
            previous = None
            images = []
            for i in range(slices):
                ds = base(patient, study, sop, modality, rng)
                ds.SeriesInstanceUID, ds.FrameOfReferenceUID = series_uid, frame_uid
                ds.SeriesNumber = 1
                ds.SeriesDescription = f"{modality} AXIAL"
                cross_section(ds, slices, i, volume[modality] + i, previous)
                if (p + s) % 3 == 2:
                    ds.compress(RLELossless, encoding_plugin="pydicom", generate_instance_uid=False)
                elif (p + s) % 4 == 1:
                    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
                images.append((ds.SOPClassUID, ds.SOPInstanceUID, series_uid))
                previous = ds.SOPInstanceUID
                save(ds, study_dir / f"{modality}{i + 1:04d}.dcm")
            save(radiograph_of(patient, study, rng, noise, radiograph, p), study_dir / "XR0001.dcm")
            save(ultrasound_of(patient, study, rng, noise), study_dir / "US0001.dcm")
            save(report_of(patient, study, rng, images), study_dir / "SR0001.dcm")
            file_count += slices + 3
        phi[patient.folder] = [patient.name, patient.patient_id, patient.birth_date, patient.address,
                               patient.phone, patient.institution, patient.physician, *written]
    extras(out)
    (out / "phi.json").write_text(json.dumps(phi, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return phi


def radiograph_of(patient: Patient, study: dict, rng: random.Random, noise, side: int, index: int) -> Dataset:
    sop, modality = (
        (ComputedRadiographyImageStorage, "CR") if index % 2 else (DigitalXRayImageStorageForPresentation, "DX")
    )
    ds = base(patient, study, sop, modality, rng)
    ds.SeriesInstanceUID = uid(rng)
    ds.SeriesNumber = 2
    ds.InstanceNumber = 1
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.ViewPosition = "PA"
    ds.BodyPartExamined = "CHEST"
    ds.PatientOrientation = ["L", "F"]
    ds.ImagerPixelSpacing = [0.15, 0.15]
    if modality == "DX":
        ds.PresentationIntentType = "FOR PRESENTATION"
        ds.DetectorType = "SCINTILLATOR"
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = 0, 1, "US"
        ds.WindowCenter, ds.WindowWidth = 2048, 4096
    pixels = body(noise, side, side, 3000).astype(np.uint16)
    label = [(patient.name.replace("^", " ") + " " + study["date"], 20, 20), ("PA ERECT", side - 300, side - 60)]
    monochrome1 = index % 3 == 0
    pixels = burn(pixels, label, max(12, side // 40), 0 if monochrome1 else 4095)
    set_pixels(ds, pixels, "MONOCHROME1" if monochrome1 else "MONOCHROME2", 12)
    return ds


def ultrasound_of(patient: Patient, study: dict, rng: random.Random, noise) -> Dataset:
    ds = base(patient, study, UltrasoundImageStorage, "US", rng)
    ds.SeriesInstanceUID = uid(rng)
    ds.SeriesNumber = 3
    ds.InstanceNumber = 1
    ds.BurnedInAnnotation = "YES"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "ABDOMINAL"]
    rows, columns = 160, 240
    grey = (body(noise, rows, columns, 180)).astype(np.uint8)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    rgb[:30] = 0
    rgb = burn(rgb, [(f"{patient.name.replace('^', ' ')}  {patient.patient_id}", 4, 4),
                     (study["date"], 160, 16)], 11, 255)
    region = Dataset()
    region.RegionSpatialFormat, region.RegionDataType, region.RegionFlags = 1, 1, 0
    region.RegionLocationMinX0, region.RegionLocationMinY0 = 10, 34
    region.RegionLocationMaxX1, region.RegionLocationMaxY1 = columns - 11, rows - 11
    region.PhysicalUnitsXDirection = region.PhysicalUnitsYDirection = 3
    region.PhysicalDeltaX = region.PhysicalDeltaY = 0.02
    ds.SequenceOfUltrasoundRegions = Sequence([region])
    set_pixels(ds, rgb, "RGB", 8)
    return ds


def report_of(patient: Patient, study: dict, rng: random.Random, images: list[tuple[str, str, str]]) -> Dataset:
    ds = base(patient, study, BasicTextSRStorage, "SR", rng)
    for keyword in ("ImageComments",):
        delattr(ds, keyword)
    ds.SeriesInstanceUID = uid(rng)
    ds.SeriesNumber = 4
    ds.InstanceNumber = 1
    ds.ValueType = "CONTAINER"
    ds.ContinuityOfContent = "SEPARATE"
    ds.CompletionFlag, ds.VerificationFlag = "COMPLETE", "UNVERIFIED"
    ds.ReferencedPerformedProcedureStepSequence = Sequence([])
    ds.PerformedProcedureCodeSequence = Sequence([])
    title = Dataset()
    title.CodeValue, title.CodingSchemeDesignator, title.CodeMeaning = "11528-7", "LN", "Radiology Report"
    ds.ConceptNameCodeSequence = Sequence([title])
    finding = Dataset()
    finding.RelationshipType, finding.ValueType = "CONTAINS", "TEXT"
    concept = Dataset()
    concept.CodeValue, concept.CodingSchemeDesignator, concept.CodeMeaning = "121071", "DCM", "Finding"
    finding.ConceptNameCodeSequence = Sequence([concept])
    finding.TextValue = f"No change since prior study for {patient.name.replace('^', ' ')}."
    ds.ContentSequence = Sequence([finding])
    series = Dataset()
    series.SeriesInstanceUID = images[0][2]
    series.ReferencedSOPSequence = Sequence([])
    for sop_class, sop_instance, _ in images[:3]:
        item = Dataset()
        item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = sop_class, sop_instance
        series.ReferencedSOPSequence.append(item)
    evidence = Dataset()
    evidence.StudyInstanceUID = study["uid"]
    evidence.ReferencedSeriesSequence = Sequence([series])
    ds.CurrentRequestedProcedureEvidenceSequence = Sequence([evidence])
    return ds


def extras(out: Path) -> None:
    """Files a real export also holds: notes, OS junk and one DICOM file cut short."""
    (out / "README.txt").write_text("Export of the radiology archive. Contact the PACS team.\n")
    (out / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + bytes(64))
    first = next(iter(sorted(out.rglob("CT0001.dcm"))), None) or next(iter(sorted(out.rglob("MR0001.dcm"))))
    data = first.read_bytes()
    (first.parent / "CT9999_truncated.dcm").write_bytes(data[: len(data) // 2])


def save(ds: Dataset, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--scale", choices=sorted(SCALES), default="small")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    generate(args.out, args.scale, args.seed)


if __name__ == "__main__":
    main()
