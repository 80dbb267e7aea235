"""The writer: copying untouched elements from the source gives pydicom's own bytes."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from pydicom import dcmwrite

from conftest import KEY
from deid.pipeline import RunConfig
from deid.process import worker_for
from deid.reader import read_dataset, settle_transfer_syntax
from deid.stage import Instance, Quarantined
from deid.writer import _encode, output_relpath, replace_file_meta


@pytest.mark.corpus
def test_spliced_bytes_equal_pydicoms_on_the_whole_corpus(shared: Path):
    worker = worker_for(RunConfig("research", (), KEY, header_only=True))
    compared = 0
    for path in sorted((shared / "corpus").rglob("*")):
        if not path.is_file():
            continue
        data = path.read_bytes()
        try:
            ds = read_dataset(data)
            if ds is None:
                continue
            settle_transfer_syntax(ds)
            item = Instance(ds)
            for stage in worker.stages:
                stage(item)
        except Quarantined:
            continue
        replace_file_meta(ds)
        output_relpath(item, worker.pseudo)
        spliced = b"".join(_encode(ds, data))
        reference = io.BytesIO()
        dcmwrite(reference, ds, enforce_file_format=True)
        assert spliced == reference.getvalue(), path
        compared += 1
    assert compared > 150
