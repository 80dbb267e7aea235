"""The header engine: each action code, options, nesting, private data, character sets."""

from __future__ import annotations

import io

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from conftest import KEY, make_ct
from deid.header.engine import HeaderEngine
from deid.header.iod import resolve_compound
from deid.header.profiles import load_profile
from deid.provenance import ProvenanceStage
from deid.pseudonyms import Pseudonymizer, shift_da, shift_dt
from deid.stage import Instance


def deidentify(ds: Dataset, profile: str = "basic", options: tuple[str, ...] = ()):
    """The header engine on ``ds``, then the provenance stage's claims of its method."""
    engine = HeaderEngine(load_profile(profile, options), Pseudonymizer(KEY))
    ctx = engine.apply(ds)
    ProvenanceStage()(Instance(ds, method=engine.method))
    return ctx


def roundtrip(ds: Dataset) -> Dataset:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    buffer.seek(0)
    return dcmread(buffer)


def test_basic_profile_action_codes():
    ds = make_ct()
    ctx = deidentify(ds)
    assert "AccessionNumber" in ds and not ds.AccessionNumber  # Z
    assert "PatientAddress" not in ds  # X
    assert "DeviceSerialNumber" not in ds  # X/Z/D, Type 3 in the CT IOD: X
    assert "PatientAge" not in ds  # X
    assert "StudyDate" in ds and not ds.StudyDate  # Z
    referenced = ds.ReferencedImageSequence[0]  # X/Z/U*: kept with its UIDs replaced
    assert referenced.ReferencedSOPInstanceUID.startswith("2.25.")
    assert ds.SOPInstanceUID.startswith("2.25.")  # U
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2"  # well-known: kept
    assert ds.PatientID == ds.PatientName == ctx.patient_pseudonym  # Z with the pseudonym
    assert ds.PatientIdentityRemoved == "YES"
    assert ds.LongitudinalTemporalInformationModified == "REMOVED"
    assert [c.CodeValue for c in ds.DeidentificationMethodCodeSequence] == ["113100"]
    assert (0x0029, 0x0010) not in ds and (0x0029, 0x1001) not in ds  # private block gone


def test_references_map_like_the_objects_they_point_to():
    referenced = make_ct(sop_uid="1.2.826.0.1.3680043.8.498.1002")
    referring = make_ct()
    instance = Dataset()
    instance.ReferencedSOPClassUID = referenced.SOPClassUID
    instance.ReferencedSOPInstanceUID = referenced.SOPInstanceUID
    series = Dataset()
    series.SeriesInstanceUID = referenced.SeriesInstanceUID
    series.ReferencedInstanceSequence = Sequence([instance])
    referring.ReferencedSeriesSequence = Sequence([series])
    deidentify(referenced)
    deidentify(referring)
    series = referring.ReferencedSeriesSequence[0]
    assert series.SeriesInstanceUID == referenced.SeriesInstanceUID
    assert series.ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == referenced.SOPInstanceUID
    assert series.ReferencedInstanceSequence[0].ReferencedSOPClassUID == referenced.SOPClassUID
    assert referring.FrameOfReferenceUID == referenced.FrameOfReferenceUID
    assert referring.SOPInstanceUID != referenced.SOPInstanceUID


def test_three_levels_of_sequences_are_cleaned():
    ds = make_ct()
    level3 = Dataset()
    level3.PersonName = "DOE^JOHN"
    level3.Date = "20240229"
    level3.ReferencedSOPInstanceUID = "1.2.826.0.1.3680043.8.498.1001"
    level2 = Dataset()
    level2.ContentSequence = Sequence([level3])
    level1 = Dataset()
    level1.ReferencedSeriesSequence = Sequence([level2])
    ds.ReferencedInstanceSequence = Sequence([level1])
    deidentify(ds, "research")
    level3 = ds.ReferencedInstanceSequence[0].ReferencedSeriesSequence[0].ContentSequence[0]
    assert level3.ReferencedSOPInstanceUID == ds.SOPInstanceUID  # U at depth 3, consistent
    assert str(level3.PersonName) not in ("", "DOE^JOHN")  # D
    assert level3.Date not in ("", "20240229")  # C: shifted
    assert "ReferencedStudySequence" not in ds.RequestAttributesSequence[0]  # X/Z, Type 3


def test_options_override_basic():
    ds = make_ct()
    deidentify(ds, "basic", ("retain_uids", "retain_patient_characteristics", "retain_device_identity"))
    assert ds.SOPInstanceUID == "1.2.826.0.1.3680043.8.498.1001"
    assert ds.PatientAge == "063Y"
    assert ds.DeviceSerialNumber == "SN-778899"
    codes = [c.CodeValue for c in ds.DeidentificationMethodCodeSequence]
    assert codes == ["113100", "113110", "113109", "113108"]


def test_modified_dates_shift_consistently_per_patient():
    a, b = make_ct(), make_ct(sop_uid="1.2.826.0.1.3680043.8.498.1009")
    ctx = deidentify(a, "research")
    deidentify(b, "research")
    assert a.StudyDate == b.StudyDate == shift_da("20240301", ctx.shift_days)
    assert a.StudyDate != "20240301"
    assert a.StudyTime == "101500"  # time of day kept
    assert a.AcquisitionDateTime == shift_dt("20240301101702.5", ctx.shift_days)
    assert a.LongitudinalTemporalInformationModified == "MODIFIED"


def test_full_dates_keep_dates():
    ds = make_ct()
    deidentify(ds, "basic", ("retain_long_full_dates",))
    assert ds.StudyDate == "20240301"
    assert ds.LongitudinalTemporalInformationModified == "UNMODIFIED"


def test_clean_descriptors_strips_the_objects_own_identifiers():
    ds = make_ct()
    deidentify(ds, "research")
    assert ds.StudyDescription == "CT CHEST for"
    assert "MRN445566" not in ds.ImageComments


def test_safe_private_kept_only_when_listed():
    ds = make_ct()
    block = ds.private_block(0x7053, "Philips PET Private Group", create=True)
    block.add_new(0x00, "DS", "1.5")  # SUV factor: Table E.3.10-1
    block.add_new(0x01, "LO", "DOE")  # not listed
    deidentify(ds, "research")
    assert ds[0x7053, 0x1000].value == "1.5"
    assert (0x7053, 0x1001) not in ds
    assert (0x0029, 0x1001) not in ds
    assert ds[0x7053, 0x0010].value == "Philips PET Private Group"


@pytest.mark.parametrize(
    ("charset", "name"),
    [("ISO_IR 100", "MÜLLER^JÖRG"), ("ISO_IR 192", "张^伟"), (["", "ISO 2022 IR 87"], "Yamada^Tarou=山田^太郎")],
)
def test_character_sets_roundtrip(charset, name):
    ds = roundtrip(make_ct(patient_name=name, charset=charset))
    assert str(ds.PatientName) == name
    ctx = deidentify(ds)
    out = roundtrip(ds)
    assert str(out.PatientName) == ctx.patient_pseudonym
    assert out.SpecificCharacterSet == ds.SpecificCharacterSet


@pytest.mark.parametrize(
    ("code", "type_", "expected"),
    [
        ("Z/D", "1", "D"), ("Z/D", "2", "Z"), ("X/Z", "2", "Z"), ("X/Z", "3", "X"),
        ("X/D", "1C", "D"), ("X/D", "2", "D"), ("X/D", "3", "X"), ("X/Z/D", "1", "D"), ("X/Z/D", "2", "Z"),
        ("X/Z/D", "3", "X"), ("X/Z/U*", "2", "U"), ("X/Z/U*", "3", "U"),
        ("Z/D", None, "D"), ("X/Z", None, "Z"), ("X/Z/D", None, "D"), ("X/Z/U*", None, "U"),
    ],
)
def test_compound_codes(code, type_, expected):
    assert resolve_compound(code, type_) == expected


def test_pseudonyms_depend_on_the_key():
    a, b = make_ct(), make_ct()
    HeaderEngine(load_profile("basic"), Pseudonymizer(KEY)).apply(a)
    HeaderEngine(load_profile("basic"), Pseudonymizer(b"another key of 32 bytes........")).apply(b)
    assert a.SOPInstanceUID != b.SOPInstanceUID and a.PatientID != b.PatientID


def test_unlisted_attributes_by_vr():
    ds = make_ct()
    ds.ExpiryDate = "20240101"  # not in Table E.1-1
    ds.ContentCreatorName = "HOUSE^GREGORY"
    deidentify(ds)
    assert "ExpiryDate" in ds and not ds.ExpiryDate  # DA without a date option: emptied
    assert "HOUSE" not in str(ds.get("ContentCreatorName", ""))


def test_shift_partial_and_invalid_dates():
    assert shift_da("2024", 1) == "2023"
    assert shift_da("20240301", 1) == "20240229"
    assert shift_da("garbage!", 1) == ""
    assert shift_dt("20240301000000+0100", 1) == "20240229000000+0100"


def test_retain_institution_identity():
    ds = make_ct()
    deidentify(ds, "basic", ("retain_institution_identity",))
    assert ds.InstitutionName == "Springfield General"
    plain = make_ct()
    deidentify(plain)
    assert "Springfield" not in str(plain.get("InstitutionName", ""))


def sr_item(value_type: str, scheme: str, code: str, meaning: str, **values) -> Dataset:
    item = Dataset()
    item.RelationshipType = "CONTAINS"
    item.ValueType = value_type
    concept = Dataset()
    concept.CodeValue, concept.CodingSchemeDesignator, concept.CodeMeaning = code, scheme, meaning
    item.ConceptNameCodeSequence = Sequence([concept])
    for keyword, value in values.items():
        setattr(item, keyword, value)
    return item


def test_clean_structured_content_acts_by_concept():
    ds = make_ct()
    ds.ContentSequence = Sequence(
        [
            sr_item("TEXT", "DCM", "121022", "Accession Number", TextValue="ACC99887"),
            sr_item("TEXT", "DCM", "121071", "Finding", TextValue="nodule seen on DOE"),
            sr_item("PNAME", "DCM", "121008", "Person Observer Name", PersonName="HOUSE^GREGORY"),
        ]
    )
    deidentify(ds, "research", ("clean_structured_content",))
    meanings = [i.ConceptNameCodeSequence[0].CodeMeaning for i in ds.ContentSequence]
    assert "Accession Number" not in meanings  # Table E.3.4-1: X
    finding = ds.ContentSequence[meanings.index("Finding")]
    assert finding.TextValue == "nodule seen on"
    observer = ds.ContentSequence[meanings.index("Person Observer Name")]
    assert "HOUSE" not in str(observer.PersonName)
    assert "113104" in [c.CodeValue for c in ds.DeidentificationMethodCodeSequence]


def test_overlays_and_curves_are_removed_whole():
    ds = make_ct()
    ds.add_new(0x60000010, "US", 8)
    ds.add_new(0x60000011, "US", 8)
    ds.add_new(0x60003000, "OW", b"\xff" * 8)
    ds.add_new(0x50000005, "US", 1)
    deidentify(ds, "basic", ("clean_graphics",))
    assert not [t for t in ds.keys() if t.group in (0x6000, 0x5000)]


def test_site_profile_rules_by_keyword_vr_and_private_creator(tmp_path):
    site = tmp_path / "site.toml"
    site.write_text(
        '[profile]\nname = "site"\nextends = "research"\n\n'
        '[[rule]]\nkeyword = "StudyDescription"\naction = "K"\n\n'
        '[[rule]]\nvr = "AE"\naction = "K"\n\n'
        '[[rule]]\nprivate_creator = "ACME HOSPITAL PRIVATE"\nelement = "xx02"\naction = "K"\n'
    )
    ds = make_ct()
    block = ds.private_block(0x0029, "ACME HOSPITAL PRIVATE")
    block.add_new(0x02, "IS", "7")
    ds.PerformedStationAETitle = "CTAE1"  # Table E.1-1: X; the site keeps AE titles
    deidentify(ds, str(site))
    assert ds.StudyDescription == "CT CHEST for DOE"  # kept as the site asked
    assert (0x0029, 0x1002) in ds and (0x0029, 0x1001) not in ds
    assert ds.PerformedStationAETitle == "CTAE1"


def test_safe_private_declared_by_the_object():
    ds = make_ct()
    block = ds.private_block(0x0031, "VENDOR X", create=True)
    block.add_new(0x01, "DS", "2.5")  # declared non-identifying
    block.add_new(0x02, "LO", "DOE JOHN")  # declared: remove
    block.add_new(0x03, "LO", "MRN445566")  # declared: replace with a dummy
    block.add_new(0x04, "LO", "unknown")  # not declared: removed
    characteristics = Dataset()
    characteristics.PrivateGroupReference = 0x0031
    characteristics.PrivateCreatorReference = "VENDOR X"
    characteristics.BlockIdentifyingInformationStatus = "MIXED"
    characteristics.NonidentifyingPrivateElements = [0x01]
    remove, dummy = Dataset(), Dataset()
    remove.IdentifyingPrivateElements, remove.DeidentificationAction = [0x02], "X"
    dummy.IdentifyingPrivateElements, dummy.DeidentificationAction = [0x03], "D"
    characteristics.DeidentificationActionSequence = Sequence([remove, dummy])
    ds.PrivateDataElementCharacteristicsSequence = Sequence([characteristics])
    deidentify(ds, "research")
    assert ds[0x0031, 0x1001].value == "2.5"
    assert (0x0031, 0x1002) not in ds and (0x0031, 0x1004) not in ds
    assert ds[0x0031, 0x1003].value not in ("", "MRN445566")


def test_research_keeps_what_the_tcia_knowledge_base_keeps():
    ds = make_ct()
    block = ds.private_block(0x3711, "A.L.I. Technologies, Inc.", create=True)
    block.add_new(0x0C, "UI", "1.2.826.0.1.3680043.8.498.9999")  # KB: hash
    basic = make_ct()
    basic.private_block(0x3711, "A.L.I. Technologies, Inc.", create=True).add_new(0x0C, "UI", "1.2.3.4")
    deidentify(ds, "research")
    deidentify(basic, "basic")
    assert ds[0x3711, 0x100C].value == Pseudonymizer(KEY).uid("1.2.826.0.1.3680043.8.498.9999")
    assert (0x3711, 0x100C) not in basic
