"""The ``deid`` command line: thin click commands over :mod:`deid.pipeline` and friends.

Exit codes: 0 every DICOM input written (or, with ``--fail-on new``, the default, no input
quarantined that was not quarantined before); 1 inputs quarantined (or, for ``verify``, a leak
found); 2 usage error; 3 configuration error (profile, key, folders, scheduler, or an output
folder made with another key, profile, options or pixel configuration); 70 unexpected internal
error; 74 the output or audit folder cannot be written (full disk, read-only or vanished mount,
permissions); 75 another run holds the output folder; 130 interrupted; 143 terminated (SIGTERM).
"""

from __future__ import annotations

import gc
import secrets
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import click
import structlog

from deid import __version__, logs
from deid.registry import config_values, run_options, whole_image_choices
from deid.shipped import default_model, default_pixels, model_privacy, privacy_summary

EXIT_CONFIG = 3
EXIT_SOFTWARE = 70
EXIT_IO = 74
EXIT_LOCKED = 75
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143


def _size(ctx: click.Context, param: click.Parameter, value: str) -> int:
    from deid.config import parse_size

    try:
        return parse_size(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _stage_options(function: Callable[..., Any]) -> Callable[..., Any]:
    """The stages' own ``deid run`` options, as :mod:`deid.registry` declares them."""
    kinds: dict[str, Any] = {"int": int, "float": float, "str": str}
    for option in reversed(run_options()):
        settings: dict[str, Any] = {"help": option.help}
        if option.choices:
            settings["type"] = click.Choice(option.choices)
        elif option.kind == "path":
            settings["type"] = click.Path(exists=True, dir_okay=False, path_type=Path)
        else:
            settings["type"] = kinds[option.kind]
        if option.default is not None:
            settings.update(default=option.default, show_default=True)
        function = click.option(*option.flags, option.parameter, **settings)(function)
    return function


def _check_scheduler(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    from deid.executors import WorkerArgumentError, parse_scheduler

    if value is not None:
        try:
            parse_scheduler(value)
        except WorkerArgumentError as exc:
            raise click.BadParameter(str(exc)) from None
    return value


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from deid.pixels.codecs import syntax_listing

    click.echo(f"deid-dicom {__version__}\npixel data this install decodes:\n{syntax_listing()}")
    ctx.exit()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_print_version,
              help="Show the version and the transfer syntaxes whose pixel data this install decodes.")
def main() -> None:
    """Batch DICOM de-identification (PS3.15 Annex E profiles, keyed pseudonyms, audit)."""


@main.command()
@click.argument("input_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("output_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--profile", "-p", default="basic", show_default=True,
              help="Shipped profile name (basic, research) or path of a site profile TOML.")
@click.option("--option", "-o", "options", multiple=True,
              help="Add a PS3.15 option to the profile (repeatable), e.g. retain_uids.")
@click.option("--key-file", type=click.Path(dir_okay=False, path_type=Path), envvar="DEID_KEY_FILE",
              help="Secret key for pseudonyms [env DEID_KEY_FILE]; default: a per-user key.")
@click.option("--jobs", "-j", type=click.IntRange(min=1),
              help="Worker processes; default: every core (never more than the cores or the files).")
@click.option("--scheduler", metavar="ADDRESS", callback=_check_scheduler,
              help="Run on Dask: a scheduler address (tcp://host:8786) or local:N for N local workers.")
@click.option("--header-only", is_flag=True,
              help="Skip every pixel stage; objects that need pixel cleaning are quarantined.")
@click.option("--pixels", type=click.Choice(whole_image_choices()), default=lambda: default_pixels(),
              show_default="deform when the shipped model's card shows a measured privacy gain, else none",
              help="Whole-image stage after the text stage, on frontal chest radiographs: the learned "
                   "deformation, DP-Pix, or none.")
@_stage_options
@click.option("--max-object-size", default="2GiB", show_default=True, callback=_size, metavar="SIZE",
              help="The most one input may inflate or decode to (e.g. 512MiB); beyond it, it is "
                   "quarantined as a decompression bomb.")
@click.option("--audit-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Private audit folder (ledger, crosswalks); default OUTPUT_DIR.audit.")
@click.option("--json-logs/--console-logs", default=None,
              help="Log format; default JSON lines unless stderr is a terminal.")
@click.option("--verbose", "-v", is_flag=True,
              help="Also log every file (written and skipped) and the libraries' warnings.")
@click.option("--quiet", "-q", is_flag=True,
              help="No progress bar and no summary: only files not written and errors.")
@click.option("--dry-run", is_flag=True,
              help="Say what the run would do (stages, profile, files found) and write nothing, not even a key.")
@click.option("--rebuild", is_flag=True,
              help="Replace the whole release: build it anew beside OUTPUT_DIR and swap it in (the old "
                   "release stays intact until then). Needed to change key, profile, options or pixels.")
@click.option("--dicomdir", is_flag=True,
              help="Also write OUT/DICOMDIR (PS3.10 media directory; its objects are hard links under "
                   "OUT/PTxxxxxx); later runs keep it up to date.")
@click.option("--fail-on", type=click.Choice(["new", "any", "never"]), default="new", show_default=True,
              help="Exit 1 for inputs quarantined by this run that were not before (new), for any "
                   "quarantined input (any), or never.")
def run(
    input_dir: Path,
    output_dir: Path,
    profile: str,
    options: tuple[str, ...],
    key_file: Path | None,
    jobs: int | None,
    scheduler: str | None,
    header_only: bool,
    pixels: str,
    max_object_size: int,
    audit_dir: Path | None,
    json_logs: bool | None,
    verbose: bool,
    quiet: bool,
    dry_run: bool,
    rebuild: bool,
    fail_on: str,
    dicomdir: bool,
    **stage_values: Any,
) -> None:
    """De-identify every DICOM file under INPUT_DIR into OUTPUT_DIR."""
    from deid.header.profiles import ProfileError
    from deid.keys import KeyFileError, key_path, load_key
    from deid.lifeline import interrupt_behind, sigterm_as_interrupt
    from deid.pipeline import EnvironmentFault, LockedError, RunConfig, default_audit_dir
    from deid.pipeline import run as run_pipeline
    from deid.release import ReleaseMismatch
    from deid.terminal import summary_lines

    json_lines = logs.configure(json_logs, verbose, quiet)
    log = structlog.get_logger()
    try:
        key = load_key(key_file, create=not dry_run)
        config = RunConfig(
            profile, options, key or secrets.token_bytes(32), header_only=header_only, pixels=pixels,
            max_object_size=max_object_size, **config_values(stage_values),
        )
        if config.deform_model and config.pixels != "deform":
            raise ValueError(f"--deform-model applies to --pixels deform, not --pixels {config.pixels}")
        if config.pixels == "deform" and not config.header_only:
            _warn_unmeasured(Path(config.deform_model) if config.deform_model else default_model(), log)
        if dry_run:
            _describe(config, input_dir, key is not None)
            return
        with sigterm_as_interrupt():
            summary = run_pipeline(
                config, input_dir, output_dir, audit_dir, jobs, scheduler, name_inputs=not json_lines,
                rebuild=rebuild, fail_on=fail_on, dicomdir=dicomdir,
                progress=False if quiet or json_lines else None,
            )
    except (ProfileError, KeyFileError, ReleaseMismatch, ValueError) as exc:
        log.error("configuration error", reason=str(exc))
        sys.exit(EXIT_CONFIG)
    except LockedError as exc:
        log.error("locked", reason=str(exc))
        sys.exit(EXIT_LOCKED)
    except EnvironmentFault as exc:
        log.error("stopped; nothing unwritten was recorded: mend this and run again", reason=str(exc))
        sys.exit(EXIT_IO)
    except Exception as exc:  # noqa: BLE001 - one line, not a traceback, for what was not foreseen
        interrupt = interrupt_behind(exc)  # the clean-up after Ctrl-C or SIGTERM failed in turn
        if interrupt is None:
            log.error("unexpected error; please report it", **unexpected(exc, detail=not json_lines))
            sys.exit(EXIT_SOFTWARE)
        _stopped(log, interrupt)
    except KeyboardInterrupt as interrupt:
        _stopped(log, interrupt)
    audit = (audit_dir or default_audit_dir(output_dir.resolve())).resolve()
    if json_lines:
        log.info(
            "run finished",
            **summary.counts,
            new_quarantined=summary.new_quarantined,
            processed=summary.processed,
            resumed=summary.resumed,
            this_run=summary.this_run,
            seconds=round(summary.seconds, 2),
            key_fingerprint=summary.release["key_fingerprint"],
            audit=str(audit),
        )
    elif not quiet:
        for line in summary_lines(summary, output_dir.resolve(), audit, key_path(key_file)):
            click.echo(line, err=True)
    gc.freeze()  # spares the interpreter's final collection, which walks every object for nothing
    sys.exit(summary.exit_code)


def _stopped(log, interrupt: KeyboardInterrupt) -> NoReturn:
    """Exit on Ctrl-C (130) or SIGTERM (143), with one line."""
    from deid.lifeline import Terminated

    if isinstance(interrupt, Terminated):
        log.error("terminated; run again to finish")
        sys.exit(EXIT_TERMINATED)
    log.error("interrupted; run again to finish")
    sys.exit(EXIT_INTERRUPTED)


def unexpected(exc: BaseException, detail: bool) -> dict[str, str]:
    """What the one line on an unexpected error says: the exception's type and where it was
    raised; its message (which may quote an input path or value) only when ``detail``."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f"{Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else "?"
    event = {"error": type(exc).__name__, "where": where}
    if detail:
        event["reason"] = str(exc)
    return event


def _warn_unmeasured(model: Path, log) -> None:
    """One warning line when ``model``'s metadata records no privacy gain that met its card's bar."""
    privacy = model_privacy(model)
    if privacy is None or privacy.get("milestone") is not True:
        card = privacy["card"] if privacy else "models/deform.md"
        log.warning("the deformation model has no measured privacy gain on record; it changes the pixels "
                    f"without measured protection against re-identification (see {card})",
                    model=model.name, measured=privacy_summary(privacy))


def _describe(config, input_dir: Path, have_key: bool) -> None:
    """Print the stages a run would apply and how many files it would look at."""
    from deid.keys import default_key_path
    from deid.pipeline import discover
    from deid.process import worker_for

    worker = worker_for(config)
    if not have_key:
        click.echo(f"key: none yet; a run would create {default_key_path()}")
    click.echo(f"profile {worker.profile.name}; options: {', '.join(worker.profile.options) or 'none'}")
    click.echo(f"pixels: {'none (header only)' if config.header_only else config.pixels}")
    for number, stage in enumerate(worker.stages, 1):
        click.echo(f"{number}. {stage.name}: {stage.describe()}")
    if not config.header_only:
        from deid.pixels.codecs import syntax_listing

        click.echo(f"pixel data decoded in:\n{syntax_listing()}")
    click.echo(f"{len(discover(input_dir))} file(s) under the input folder; nothing written")


@main.command()
@click.argument("output_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--against", "input_dir", required=True,
              type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="The input tree whose identifying values must not appear in OUTPUT_DIR.")
@click.option("--audit-dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="The run's audit folder, to pair outputs with inputs; default OUTPUT_DIR.audit.")
@click.option("--profile", "-p", help="Judge retained values by this profile (name or TOML); default the run's.")
@click.option("--option", "-o", "options", multiple=True, help="With --profile: an option it adds (repeatable).")
@click.option("--format", "output_format", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--details", is_flag=True, help="List every retained value, not only their counts by option.")
@click.option("--reveal", is_flag=True, help="Print the values found (PHI!) too.")
@click.option("--ocr", is_flag=True, help="Also OCR every release image for text still in its pixels (slow).")
def verify(output_dir: Path, input_dir: Path, audit_dir: Path | None, profile: str | None,
           options: tuple[str, ...], output_format: str, details: bool, reveal: bool, ocr: bool) -> None:
    """Report identifying values of INPUT that survive anywhere in OUTPUT_DIR.

    Values the run's profile keeps on purpose (an option such as retain_uids) are listed apart.
    Exit 0: no leak; 1: a leak; 3: the profile given cannot be loaded; 70: a check failed.
    """
    import json

    from deid.header.profiles import ProfileError
    from deid.verify import verify as check_release

    try:
        report = check_release(output_dir, input_dir, audit_dir, (profile, options) if profile else None, ocr=ocr)
    except ProfileError as exc:
        click.echo(f"deid verify: {exc}", err=True)
        sys.exit(EXIT_CONFIG)
    except Exception as exc:  # noqa: BLE001 - one line, never a traceback
        click.echo(f"deid verify: unexpected error ({type(exc).__name__}); nothing verified", err=True)
        sys.exit(EXIT_SOFTWARE)
    if output_format == "json":
        click.echo(json.dumps(report.as_dict(reveal), indent=2))
    else:
        for line in report.lines(reveal, details):
            click.echo(line)
    sys.exit(report.exit_code)


@main.group()
def profiles() -> None:
    """List the shipped profiles or show what one does, rule by rule."""


@profiles.command("list")
def profiles_list() -> None:
    """List the shipped profiles and the PS3.15 options."""
    from deid.header.profiles import OPTIONS, load_profile, shipped_profiles

    for name in shipped_profiles():
        profile = load_profile(name)
        click.echo(f"{name}: {', '.join(profile.options) or 'no options'}")
    click.echo("options: " + ", ".join(OPTIONS))


@profiles.command("show")
@click.argument("name")
@click.option("--option", "-o", "options", multiple=True, help="Add a PS3.15 option.")
def profiles_show(name: str, options: tuple[str, ...]) -> None:
    """Print every rule of profile NAME: tag, name, action and where the rule comes from."""
    from deid.header.actions import BY_CODE
    from deid.header.profiles import ProfileError, load_profile

    try:
        profile = load_profile(name, options)
    except ProfileError as exc:
        raise click.UsageError(str(exc)) from exc
    click.echo(f"profile {profile.name}; options: {', '.join(profile.options) or 'none'}")
    click.echo("codes: " + ", ".join(f"{c.value} {c.meaning}" for c in profile.codes))
    for rule in sorted(profile.rules(), key=lambda r: r.tag or r.keyword or r.vr or ""):
        target = rule.tag or rule.keyword or (f"VR {rule.vr}" if rule.vr else f"private {rule.private_creator}")
        click.echo(f"{target:14} {rule.action:7} {rule.source:32} {rule.name}")
    click.echo("\nactions:")
    for action in BY_CODE.values():
        click.echo("  " + action.describe())
    click.echo(
        "  compound codes (Z/D, X/Z, X/D, X/Z/D, X/Z/U*) resolve by the attribute's Type in the "
        "object's IOD; see deid.header.iod.resolve_compound"
    )
    click.echo(
        "  attributes not listed: UI replaced unless a registry UID, DA/DT shifted/kept/removed "
        "by the date option, TM kept only with a date option, PN emptied, free text stripped of "
        "the object's identifying values, private attributes removed unless safe"
    )


def _shared_option(function):
    return click.option(
        "--shared", type=click.Path(exists=True, file_okay=False, path_type=Path), envvar="DEID_SHARED",
        default="../shared", show_default=True, help="Folder holding cxr/ (the chest radiograph set).",
    )(function)


def _work_option(function):
    return click.option(
        "--work", type=click.Path(file_okay=False, path_type=Path), default="runs", show_default=True,
        help="Working folder for checkpoints and evaluation results.",
    )(function)


def _train_module():
    try:
        from deid.train import commands
    except ImportError as exc:
        raise click.ClickException(f"{exc}; training needs: pip install 'deid-dicom[train]'") from exc
    logs.configure()
    return commands


def _device_option(function):
    return click.option("--device", default="cpu", show_default=True,
                        help="Where the networks run and the splits are held: cpu, cuda, cuda:N "
                             "(mixed precision on a GPU).")(function)


@main.group()
def model() -> None:
    """Train, evaluate and export the deformation generator (needs the train extra)."""


@model.command("train")
@_shared_option
@_work_option
@click.option("--preset", default="cpu", show_default=True, type=click.Choice(["paper", "cpu", "toy"]))
@_device_option
@click.option("--objective", default="linkage", show_default=True, type=click.Choice(["linkage", "prichexy"]),
              help="linkage: against the fixed linkage attacks, utility held by the classifier; prichexy: "
                   "PriCheXy-Net's live siamese attacker and classifier.")
@click.option("--mu", default=0.01, show_default=True, help="Deformation degree (normalised units).")
@click.option("--intensity", default=0.0, show_default=True,
              help="Largest smooth grey-level change learned alongside the warp (linkage only).")
@click.option("--light", is_flag=True, help="The lighter generator (half the channels, a quarter of the FLOPs).")
@click.option("--seed", default=0, show_default=True)
@click.option("--epochs", type=int, help="Epochs (prichexy: adversarial epochs, default the preset's; linkage: "
                                         "epochs of --epoch-steps steps, default 30).")
@click.option("--epoch-steps", default=40, show_default=True, help="Generator steps per epoch (linkage).")
@click.option("--utility-weight", default=10.0, show_default=True, help="Weight of the classifier term (linkage).")
@click.option("--lr", default=1e-2, show_default=True, help="Generator learning rate (linkage).")
@click.option("--budget-minutes", type=float,
              help="Stop after the epoch in which training time passes this (linkage).")
@click.option("--keep-last", is_flag=True,
              help="Keep the last epoch's generator (prichexy: not the one with the lowest validation loss; "
                   "linkage: not the one with the lowest validation attack within the utility tolerance).")
def model_train(shared: Path, work: Path, preset: str, device: str, objective: str, mu: float, intensity: float,
                light: bool, seed: int, epochs: int | None, epoch_steps: int, utility_weight: float, lr: float,
                budget_minutes: float | None, keep_last: bool) -> None:
    """Train a generator on the train split; a linkage run resumes from its checkpoint in WORK."""
    commands = _train_module()
    commands.use_device(device)
    if objective == "prichexy":
        click.echo(commands.train(shared, work, preset, mu, light, seed, epochs, keep_last))
    else:
        click.echo(commands.train_linkage(shared, work, preset, mu, intensity, light, seed, epochs or 30,
                                          epoch_steps, utility_weight, lr, budget_minutes, keep_last))


@model.command("evaluate")
@_shared_option
@_work_option
@click.option("--preset", default="cpu", show_default=True, type=click.Choice(["paper", "cpu", "toy"]))
@_device_option
@click.option("--runs", default=3, show_default=True, help="Fresh learned attackers to train.")
@click.option("--dp-block", default=4, show_default=True, help="DP-Pix cell side, in pixels at the preset size.")
@click.option("--dp-epsilon", default=0.1, show_default=True)
@click.option("--split", default="test", show_default=True, type=click.Choice(["test", "val"]),
              help="val: a sweep on the validation split, fixed attackers only (with --runs 0).")
@click.option("--classifier", "classifiers", multiple=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A utility classifier file (repeatable; the first gives the table's figure); default the "
                   "real-image classifier in WORK.")
@click.option("--min-genuine-pairs", type=int, help="Fewest genuine pairs of a source in the weighted column "
                                                   "(default 40).")
@click.option("--keys", default=1, show_default=True,
              help="Evaluation keys a keyed transform is measured under; mean ± std then cover them too.")
@click.argument("anonymizer")
def model_evaluate(shared: Path, work: Path, preset: str, device: str, runs: int, dp_block: int, dp_epsilon: float,
                   split: str, classifiers: tuple[Path, ...], min_genuine_pairs: int | None, keys: int,
                   anonymizer: str) -> None:
    """Measure ANONYMIZER (real, dp-pix, keyed:<magnitudes> such as keyed:r8-s0.08-t0.06-e0.04g4-i0.2g3,
    or a generator checkpoint) and print the table of every evaluation in WORK."""
    commands = _train_module()
    commands.use_device(device)
    try:
        click.echo(commands.evaluate(shared, work, preset, anonymizer, runs, dp_block, dp_epsilon, split,
                                     classifiers, min_genuine_pairs, keys))
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(commands.report(work))


@model.command("classifier")
@_shared_option
@click.option("--preset", default="cpu", show_default=True, type=click.Choice(["paper", "cpu", "toy"]))
@_device_option
@click.option("--augment", required=True, help="Largest random changes, e.g. r10-s0.1-t0.08-e0.04g4-i0.2g3.")
@click.option("--epochs", default=16, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path))
def model_classifier(shared: Path, preset: str, device: str, augment: str, epochs: int, seed: int, out: Path) -> None:
    """Train the utility classifier on real images with standard (unkeyed) augmentation; save it as OUT."""
    commands = _train_module()
    commands.use_device(device)
    click.echo(commands.train_augmented_classifier(shared, out, preset, augment, epochs, seed))


@model.command("report")
@_work_option
@click.option("--card", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Write the tables into this model card (between its results lines) instead of printing them.")
def model_report(work: Path, card: Path | None) -> None:
    """Print the evaluation results in WORK as markdown tables, or write them into CARD."""
    commands = _train_module()
    if card is None:
        click.echo(commands.report(work))
    else:
        commands.write_card(card, commands.report(work))
        click.echo(card)


@model.command("export")
@click.argument("checkpoint")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default="models/deform.onnx",
              show_default=True)
@click.option("--evaluation", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The checkpoint's eval-*.json; with --real, its measured privacy goes into the metadata.")
@click.option("--real", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="eval-real.json of the same protocol.")
def model_export(checkpoint: str, out: Path, evaluation: Path | None, real: Path | None) -> None:
    """Export CHECKPOINT (a generator checkpoint, or keyed:<magnitudes> for the keyed random
    transform) as one ONNX graph for any image size, checked against torch."""
    if (evaluation is None) != (real is None):
        raise click.UsageError("--evaluation and --real go together")
    try:
        click.echo(_train_module().export_checkpoint(checkpoint, out, evaluation, real))
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


@model.command("record")
@click.argument("model_file", metavar="MODEL", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--evaluation", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The model's eval-*.json.")
@click.option("--real", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="eval-real.json of the same protocol.")
def model_record(model_file: Path, evaluation: Path, real: Path) -> None:
    """Record a new measurement of an exported MODEL (.onnx) in its metadata, without exporting it
    again; the default of --pixels follows it."""
    try:
        click.echo(_train_module().record_measurement(model_file, evaluation, real))
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


if __name__ == "__main__":
    main()
