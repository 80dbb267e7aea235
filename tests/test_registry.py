"""The stage registry: the configuration, the CLI, the gate and the stage list follow from it."""

from __future__ import annotations

import dataclasses

import pytest
from click.testing import CliRunner

from conftest import KEY, make_ct
from deid import registry
from deid.cli import main
from deid.config import RunConfig
from deid.header.profiles import load_profile
from deid.pseudonyms import Pseudonymizer
from deid.registry import STAGES, BuildContext, Option, StageSpec, build_stages, config_values, run_options
from deid.stage import Instance, Quarantined

#: The run-level fields; every other RunConfig field belongs to a stage.
CORE_FIELDS = {"profile", "options", "key", "header_only", "pixels", "max_object_size"}


def context(config: RunConfig) -> BuildContext:
    return BuildContext(load_profile(config.profile, config.options), Pseudonymizer(config.key))


def test_every_runconfig_field_is_the_run_s_or_a_stage_s():
    stage_fields = {name for spec in STAGES for name in spec.fields}
    assert {f.name for f in dataclasses.fields(RunConfig)} == CORE_FIELDS | stage_fields
    assert {option.field for option in run_options()} == stage_fields


def test_deid_run_offers_every_stage_option_and_the_whole_image_choices():
    text = CliRunner().invoke(main, ["run", "--help"], terminal_width=200).output
    for option in run_options():
        assert option.flags[0] in text
    assert "[deform|dp-pix|none]" in text


def test_cli_values_become_config_fields():
    values = {"text_mode": "all", "text_fill": "black", "deform_model": None, "deform_rules": None,
              "dp_pix_block": 4, "dp_pix_epsilon": 0.5, "dp_pix_m": 2.0}
    fields = config_values(values)
    assert fields["dp_pix"] == (4, 0.5, 2.0) and fields["text_mode"] == "all"
    assert RunConfig("basic", (), KEY, **fields).dp_pix == (4, 0.5, 2.0)


def test_stage_list_follows_the_configuration():
    def names(config: RunConfig) -> list[str]:
        return [stage.name for stage in build_stages(config, context(config))]

    assert names(RunConfig("basic", (), KEY, header_only=True)) == ["gate", "header", "provenance"]
    assert names(RunConfig("basic", (), KEY, pixels="none")) == ["gate", "header", "text", "provenance"]
    assert names(RunConfig("basic", (), KEY, pixels="dp-pix")) == ["gate", "header", "text", "dp-pix", "provenance"]
    with pytest.raises(ValueError, match="unknown pixel stage"):
        names(RunConfig("basic", (), KEY, pixels="blur"))


def test_gate_refuses_only_what_a_stage_not_in_force_would_handle():
    ds = make_ct()
    ds.Modality, ds.BurnedInAnnotation = "US", "YES"
    header_only = RunConfig("basic", (), KEY, header_only=True)
    gate = build_stages(header_only, context(header_only))[0]
    with pytest.raises(Quarantined, match="burned-in text"):
        gate(Instance(ds))
    with_text = RunConfig("basic", (), KEY, pixels="none")
    build_stages(with_text, context(with_text))[0](Instance(ds))  # the text stage will handle it


def test_a_new_stage_is_one_entry(monkeypatch):
    class Stamp:
        name = "stamp"

        def describe(self) -> str:
            return "stamp"

        def __call__(self, item: Instance) -> None:
            item.stages.append(self.name)

    spec = StageSpec("stamp", "a test stage", lambda config, context: Stamp(), pixel=True,
                     options=(Option(("--text-mode",), "text_mode", help="shared"),))
    monkeypatch.setattr(registry, "STAGES", (*STAGES[:-1], spec, STAGES[-1]))
    config = RunConfig("basic", (), KEY, pixels="none")
    assert [stage.name for stage in build_stages(config, context(config))][-2:] == ["stamp", "provenance"]
    assert [stage.name for stage in build_stages(dataclasses.replace(config, header_only=True),
                                                 context(config))] == ["gate", "header", "provenance"]
