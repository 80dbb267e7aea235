"""The provenance stage: the one writer of the claims, from the facts the stages record."""

from __future__ import annotations

import copy

from conftest import KEY, make_ct
from deid.codes import CodedConcept
from deid.config import RunConfig
from deid.header.profiles import load_profile
from deid.pixels.derive import SPATIAL_RESAMPLING
from deid.provenance import CLEAN_PIXEL_DATA, ProvenanceStage
from deid.pseudonyms import Pseudonymizer
from deid.registry import BuildContext, build_stages
from deid.stage import Derivation, Instance, Method

CLAIMS = ("PatientIdentityRemoved", "DeidentificationMethod", "DeidentificationMethodCodeSequence",
          "LongitudinalTemporalInformationModified", "DerivationDescription", "DerivationCodeSequence",
          "LossyImageCompression")
BASIC = Method("basic", (CodedConcept("113100", "DCM", "Basic Application Confidentiality Profile"),), None)


def test_the_stages_before_it_claim_nothing_and_it_claims_what_they_did():
    config = RunConfig("research", (), KEY, header_only=True)
    profile = load_profile(config.profile, config.options)
    *stages, last = build_stages(config, BuildContext(profile, Pseudonymizer(KEY)))
    instance = Instance(make_ct())
    for stage in stages:
        stage(instance)
    assert [name for name in CLAIMS if name in instance.ds] == []
    assert instance.method is not None and instance.method.codes == profile.codes
    last(instance)
    ds = instance.ds
    assert ds.PatientIdentityRemoved == "YES"
    assert ds.DeidentificationMethod.endswith("profile research")
    assert [c.CodeValue for c in ds.DeidentificationMethodCodeSequence] == [c.value for c in profile.codes]
    assert ds.LongitudinalTemporalInformationModified == "MODIFIED"
    assert instance.stages == ["header"]  # the claims are no change of its own


def test_no_fact_no_claim():
    ds = make_ct()
    before = copy.deepcopy(ds)
    ProvenanceStage()(Instance(ds))
    assert ds == before


def test_cleaned_pixels_are_claimed_once_each():
    ds = make_ct()
    ds.BurnedInAnnotation = "YES"
    derivation = Derivation("deid: learned deformation", SPATIAL_RESAMPLING)
    instance = Instance(ds, method=BASIC, text_masked=True, derivations=[derivation, derivation], lossy_source=True)
    ProvenanceStage()(instance)
    assert ds.BurnedInAnnotation == "NO"
    assert [c.CodeValue for c in ds.DeidentificationMethodCodeSequence] == ["113100", CLEAN_PIXEL_DATA.value]
    assert list(ds.ImageType) == ["DERIVED", "PRIMARY", "AXIAL"]
    assert ds.DerivationDescription == "deid: learned deformation"
    assert [(c.CodeValue, c.CodingSchemeDesignator, c.CodeMeaning) for c in ds.DerivationCodeSequence] == [
        ("113085", "DCM", "Spatial resampling")
    ]
    assert ds.LossyImageCompression == "01"


def test_a_derivation_adds_to_the_input_s_own_history():
    ds = make_ct()
    ds.BurnedInAnnotation = "YES"
    ds.DerivationDescription = "reconstructed"
    ds.DerivationCodeSequence = [CodedConcept("113072", "DCM", "Multiplanar reformatting").item()]
    del ds.ImageType
    ProvenanceStage()(Instance(ds, derivations=[Derivation("deid: DP-Pix", SPATIAL_RESAMPLING)]))
    assert ds.DerivationDescription == "reconstructed; deid: DP-Pix"
    assert [c.CodeValue for c in ds.DerivationCodeSequence] == ["113072", "113085"]
    assert list(ds.ImageType) == ["DERIVED", "SECONDARY"]
    assert ds.BurnedInAnnotation == "YES"  # no text was masked
    assert "DeidentificationMethodCodeSequence" not in ds  # no method recorded: nothing claimed of it


def test_a_coded_concept_makes_its_item_and_knows_it():
    item = CLEAN_PIXEL_DATA.item()
    assert (item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning) == (
        "113101", "DCM", "Clean Pixel Data Option"
    )
    assert CLEAN_PIXEL_DATA.matches(item)
    assert not CodedConcept("113101", "99LOCAL", "Clean Pixel Data Option").matches(item)
