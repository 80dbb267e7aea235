"""The closing summary of ``deid run`` for a person at a terminal: what became of the inputs,
where the release, the audit and the review page are, and which key was used (its file and
fingerprint, never the key)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from deid.review import review_page

if TYPE_CHECKING:
    from deid.pipeline import RunSummary


def summary_lines(summary: RunSummary, output_dir: Path, audit_dir: Path, key_file: Path) -> list[str]:
    """The closing summary, a few lines.

    Parameters
    ----------
    summary
        The run's counts.
    output_dir, audit_dir
        The release and its audit folder.
    key_file
        The key file used (:func:`deid.keys.key_path`).
    """
    counts, this_run = summary.counts, summary.this_run
    total = sum(counts.values())
    lines = [
        f"deid: {counts['written']} written, {counts['quarantined']} quarantined, {counts['skipped']} skipped "
        f"of {total} input(s) in {summary.seconds:.1f} s",
        f"  this run: {summary.processed} processed ({this_run.get('written', 0)} written, "
        f"{this_run.get('quarantined', 0)} quarantined, {this_run.get('skipped', 0)} skipped), "
        f"{summary.resumed} done before; {summary.new_quarantined} new quarantine(s)",
        f"  release:  {output_dir}",
        f"  audit:    {audit_dir} (private{'; reasons in quarantine.csv' if counts['quarantined'] else ''})",
        f"  review:   {review_page(audit_dir)} (private: shows PHI)",
    ]
    fingerprint = summary.release.get("key_fingerprint", "")
    lines.append(f"  key:      {key_file}" + (f" (fingerprint {fingerprint})" if fingerprint else ""))
    return lines


__all__ = ["summary_lines"]
