"""``rsam data inspect`` and the shard format's compatibility with ``wids`` (an independent reader)."""

from __future__ import annotations

import json

import pytest
from helpers.shard_utils import member_span, read_samples
from PIL import Image

from rsam.cli.main import main as rsam_main
from rsam.data.reader import CorruptShardError, IndexedShards, open_shard
from rsam.data.shards import split_shards
from rsam.data.synthetic import write_synthetic_dataset


@pytest.fixture()
def dataset(tmp_path):
    folder = tmp_path / "syn"
    write_synthetic_dataset(folder, {"train": [4, 3], "val": [2, 5, 1]}, image_size=12)
    return folder


def test_wids_reads_our_index_and_shards_identically(dataset, tmp_path):
    import wids

    ours = IndexedShards([dict(s, url=s["path"]) for s in split_shards(dataset, "val")])
    theirs = wids.ShardListDataset(  # wids on its own, from the split's descriptor
        str(dataset / "val.index.json"), cache_dir=str(tmp_path / "wids_cache"), transformations=lambda sample: sample
    )
    reference = read_samples(dataset)  # the standard library's tarfile
    assert len(theirs) == len(ours) == 8
    for index in range(len(ours)):
        a, b = ours.raw(index), theirs[index]
        assert a["__key__"] == b["__key__"] == f"syn-{index + 7:08d}"
        for suffix in ("png", "mask.png", "json"):
            payload = b["." + suffix]
            assert a[suffix] == reference[a["__key__"]][suffix]
            assert a[suffix] == (payload.getvalue() if hasattr(payload, "getvalue") else payload)


def test_summary_counts_and_contact_sheet(dataset, tmp_path, capsys):
    sheet = tmp_path / "sheet.png"
    code = rsam_main(["data", "inspect", str(dataset), "--contact-sheet", str(sheet), "--count", "5", "--verify"])
    summary = json.loads(capsys.readouterr().out)
    assert code == 0 and summary["problems"] == []
    assert (summary["samples"], summary["shards"]) == (15, 5)
    assert summary["splits"]["val"]["samples"] == 8 and summary["splits"]["train"]["samples"] == 7
    # synthetic kinds cycle one-to-one, one-to-many, one-to-zero over the global sample number; train (0-6) is
    # written first, so val holds numbers 7-14: many, zero, one, many, zero, one, many, zero
    assert summary["splits"]["val"]["kinds"] == {"one-to-many": 3, "one-to-one": 2, "one-to-zero": 3}
    assert summary["bytes"] == sum(p.stat().st_size for p in dataset.glob("*.tar"))
    with Image.open(sheet) as image:
        assert image.width == 4 * 256 and image.height > 2 * 256


def test_verify_names_a_corrupt_member(dataset, capsys):
    shard = dataset / "val-000001.tar"
    key = "syn-00000011"  # train holds 0-6, val-000000 7-8, so position 2 of val-000001
    offset, size = member_span(shard, f"{key}.png")
    data = bytearray(shard.read_bytes())
    data[offset + 20 : offset + size] = b"\0" * (size - 20)  # same length, garbage pixels
    shard.write_bytes(bytes(data))
    code = rsam_main(["data", "inspect", str(dataset), "--verify"])
    problems = json.loads(capsys.readouterr().out)["problems"]
    assert code == 1 and len(problems) == 1 and "sha256" in problems[0]


def test_reader_rejects_a_corrupt_header(dataset):
    shard = dataset / "train-000000.tar"
    data = bytearray(shard.read_bytes())
    data[124:136] = b"99999999999\0"  # member size no longer matches the header checksum
    shard.write_bytes(bytes(data))
    with pytest.raises(CorruptShardError, match="train-000000.tar: corrupt tar header"):
        open_shard(str(shard))
