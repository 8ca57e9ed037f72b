"""``rsam data from-refer`` on a hand-made RRSIS-D-style folder: masks, rejects, resume, untrusted pickle."""

from __future__ import annotations

import io
import json
import os
import pickle
import tarfile

import numpy as np
import pytest
from helpers.shard_utils import read_samples
from PIL import Image
from pycocotools import mask as mask_utils

from rsam.cli.main import main as rsam_main
from rsam.data.masks import encode_rle
from rsam.data.pipeline import convert
from rsam.data.records import decode_mask_png
from rsam.data.refer import ReferConverter, load_refs

H, W = 16, 20


def _image_bytes(fmt: str, colour) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (W, H), colour).save(buffer, format=fmt)
    return buffer.getvalue()


def _box(y0, y1, x0, x1) -> np.ndarray:
    mask = np.zeros((H, W), bool)
    mask[y0:y1, x0:x1] = True
    return mask


@pytest.fixture()
def refer_root(tmp_path):
    root = tmp_path / "RemoteSAM-270K"
    (root / "JPEGImages").mkdir(parents=True)
    (root / "Annotations").mkdir()
    (root / "JPEGImages" / "a.jpg").write_bytes(_image_bytes("JPEG", (200, 10, 10)))
    (root / "JPEGImages" / "b.png").write_bytes(_image_bytes("PNG", (10, 200, 10)))  # refs say b.jpg
    (root / "JPEGImages" / "c.jpg").write_bytes(_image_bytes("PNG", (10, 10, 200)))  # PNG bytes, .jpg name
    overlap = [encode_rle(_box(2, 8, 2, 10)), encode_rle(_box(5, 12, 6, 15))]
    annotations = [
        {"id": 1, "image_id": 1, "segmentation": overlap, "area": 0},
        {"id": 2, "image_id": 2, "segmentation": [[1, 1, 12, 1, 12, 9, 1, 9]], "area": 0},
        {"id": 3, "image_id": 3, "segmentation": [encode_rle(np.zeros((H + 1, W), bool))], "area": 0},
        {"id": 4, "image_id": 1, "segmentation": [encode_rle(np.zeros((H, W), bool))], "area": 0},
    ]
    instances = {
        "images": [{"id": i, "file_name": f} for i, f in ((1, "a.jpg"), (2, "b.jpg"), (3, "c.jpg"))],
        "annotations": annotations,
        "categories": [{"id": 5, "name": "roof"}],
    }
    (root / "Annotations" / "instances.json").write_text(json.dumps(instances))

    def ref(split, ann, image, file_name, sentences):
        return {
            "split": split,
            "ann_id": ann,
            "image_id": image,
            "file_name": file_name,
            "category_id": 5,
            "ref_id": ann * 10,
            "sentences": [{"sent": s, "raw": s.upper()} for s in sentences],
        }

    refs = [
        ref("train", 1, 1, "a.jpg", ["the red roof", "roof on the left"]),
        ref("train", 2, 2, "b.jpg", ["tennis court in the image"]),
        ref("val", 4, 1, "a.jpg", ["ship in the image"]),
        ref("val", 3, 3, "c.jpg", ["mismatched mask"]),
        ref("val", 1, 9, "missing.jpg", ["no image"]),
        ref("train", 99, 1, "a.jpg", ["no annotation"]),
        ref("train", 1, 1, "a.jpg", []),
        ref("train", 1, 1, "a.jpg", [""]),
        ref("val", 2, 3, "c.jpg", ["blue court"]),
    ]
    (root / "Annotations" / "refs(unc).p").write_bytes(pickle.dumps(refs, protocol=2))
    return root


def _converter(root, **kwargs) -> ReferConverter:
    return ReferConverter(
        root / "Annotations" / "refs(unc).p",
        root / "Annotations" / "instances.json",
        root / "JPEGImages",
        source="rrsisd",
        **kwargs,
    )


def test_convert_skip_masks_kinds_and_reconciled_counts(refer_root, tmp_path):
    out = tmp_path / "out"
    report = convert(_converter(refer_root).spec(), out, shard_size=2, on_error="skip")
    assert (report["inputs"], report["written"], report["rejected"], report["samples"]) == (9, 4, 5, 4)
    assert report["reconciled"] and report["unit"] == "sentence"
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    reasons = " | ".join(r["reason"] for r in rejects)
    for expected in (
        "differs from the image size",
        "missing.jpg",
        "annotation 99 missing",
        "no sentences",
        "empty expression",
    ):
        assert expected in reasons
    assert all(r["input"].startswith("ref[") for r in rejects)

    samples = read_samples(out)
    assert sorted(samples) == ["rrsisd-ref-0-0", "rrsisd-ref-1-0", "rrsisd-ref-2-0", "rrsisd-ref-8-0"]
    first = samples["rrsisd-ref-0-0"]
    record = json.loads(first["json"])
    assert (record["text"], record["kind"], record["category"], record["split"]) == (
        "the red roof",
        "one-to-one",
        "roof",
        "train",
    )
    # independent reference: pycocotools decode of the raw annotation, official "== 1" rule
    rles = [
        dict(r, counts=r["counts"].encode())
        for r in json.loads((refer_root / "Annotations" / "instances.json").read_text())["annotations"][0][
            "segmentation"
        ]
    ]
    reference = mask_utils.decode(rles).sum(axis=2) == 1
    np.testing.assert_array_equal(decode_mask_png(first["mask.png"]), reference)
    assert first["jpg"] == (refer_root / "JPEGImages" / "a.jpg").read_bytes()  # original bytes, no re-encode
    retried = samples["rrsisd-ref-1-0"]
    assert retried["png"] == (refer_root / "JPEGImages" / "b.png").read_bytes()
    assert json.loads(retried["json"])["kind"] == "one-to-many"
    zero = samples["rrsisd-ref-2-0"]
    assert json.loads(zero["json"])["kind"] == "one-to-zero" and not decode_mask_png(zero["mask.png"]).any()
    png_named_jpg = samples["rrsisd-ref-8-0"]
    assert png_named_jpg["png"] == (refer_root / "JPEGImages" / "c.jpg").read_bytes()  # suffix from the bytes
    assert json.loads(png_named_jpg["json"])["image_file"] == "c.jpg"
    index = json.loads((out / "index.json").read_text())
    assert index["splits"]["train"]["nsamples"] == 2 and index["splits"]["val"]["nsamples"] == 2


def test_all_sentences_and_raw_field(refer_root, tmp_path):
    report = convert(
        _converter(refer_root, sentences="all", text_field="raw", splits=["train"]).spec(),
        tmp_path / "out",
        on_error="skip",
    )
    assert (report["inputs"], report["samples"]) == (6, 3)
    texts = sorted(json.loads(s["json"])["text"] for s in read_samples(tmp_path / "out").values())
    assert texts == ["ROOF ON THE LEFT", "TENNIS COURT IN THE IMAGE", "THE RED ROOF"]


def test_cli_raise_names_the_sample(refer_root, tmp_path, capsys):
    code = rsam_main(["data", "from-refer", "--root", str(refer_root), "--out", str(tmp_path / "o")])
    assert code == 2
    assert "ref[" in capsys.readouterr().err


class _Boom:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_untrusted_pickle_never_executes(tmp_path):
    boom = _Boom()
    boom.marker = tmp_path / "pwned"
    path = tmp_path / "refs.p"
    path.write_bytes(pickle.dumps([{"split": "train", "payload": boom}]))
    with pytest.raises(ValueError, match="refusing to load global"):
        load_refs(path)
    assert not boom.marker.exists()


class _Interrupt(Exception):
    pass


def test_interrupted_run_resumes_identically_and_reruns_are_noops(refer_root, tmp_path, monkeypatch):
    clean = tmp_path / "clean"
    convert(_converter(refer_root, sentences="all").spec(), clean, shard_size=1, on_error="skip")

    resumed = tmp_path / "resumed"
    converter = _converter(refer_root, sentences="all")
    calls = {"n": 0}
    original = converter.materialize

    def flaky(job):
        calls["n"] += 1
        if calls["n"] == 3:
            raise _Interrupt()
        return original(job)

    spec = converter.spec()
    spec.materialize = flaky
    with pytest.raises(_Interrupt):
        convert(spec, resumed, shard_size=1, on_error="skip")
    assert not (resumed / "index.json").exists()
    (resumed / "train-000005.tar").write_bytes(b"garbage from a crash")
    (resumed / "train-000001.tar.tmp").write_bytes(b"partial")
    convert(_converter(refer_root, sentences="all").spec(), resumed, shard_size=1, on_error="skip")

    def digests(folder):
        return {p.name: p.read_bytes() for p in folder.iterdir() if p.suffix == ".tar" or p.name.endswith(".json")}

    assert digests(resumed) == digests(clean)
    keys = [k for k in read_samples(resumed)]
    assert len(keys) == len(set(keys)) == 5

    stamp = (resumed / "index.json").stat().st_mtime_ns
    convert(_converter(refer_root, sentences="all").spec(), resumed, shard_size=1, on_error="skip")
    assert (resumed / "index.json").stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="--overwrite"):
        convert(_converter(refer_root, sentences="first").spec(), resumed, shard_size=1, on_error="skip")
    rebuilt = convert(
        _converter(refer_root, sentences="first").spec(), resumed, shard_size=1, on_error="skip", replace_stale=True
    )
    assert (rebuilt["inputs"], rebuilt["samples"]) == (9, 4) and len(read_samples(resumed)) == 4


def test_shards_are_plain_deterministic_tars(refer_root, tmp_path):
    convert(_converter(refer_root).spec(), tmp_path / "o", on_error="skip")
    with tarfile.open(tmp_path / "o" / "train-000000.tar") as tar:
        members = tar.getmembers()
    assert [m.name for m in members][:3] == ["rrsisd-ref-0-0.jpg", "rrsisd-ref-0-0.mask.png", "rrsisd-ref-0-0.json"]
    assert all(m.mtime == 0 and m.uid == 0 for m in members)


def test_refs_with_unsafe_split_names_are_rejected(refer_root, tmp_path):
    refs_path = refer_root / "Annotations" / "refs(unc).p"
    refs = pickle.loads(refs_path.read_bytes())[:1]
    refs.append(dict(refs[0], split="../evil"))
    refs_path.write_bytes(pickle.dumps(refs))
    out = tmp_path / "o"
    report = convert(_converter(refer_root).spec(), out, on_error="skip")
    assert (report["inputs"], report["written"], report["rejected"]) == (2, 1, 1)
    assert "invalid split '../evil'" in (out / "rejects.jsonl").read_text()
    assert sorted(p.name for p in out.glob("*.tar")) == ["train-000000.tar"]


def test_parallel_workers_write_identical_datasets(refer_root, tmp_path):
    serial = convert(_converter(refer_root, sentences="all").spec(), tmp_path / "serial", shard_size=2, on_error="skip")
    parallel = convert(
        _converter(refer_root, sentences="all").spec(), tmp_path / "parallel", shard_size=2, on_error="skip", workers=2
    )
    assert serial == parallel
    for path in (tmp_path / "serial").iterdir():
        assert (tmp_path / "parallel" / path.name).read_bytes() == path.read_bytes()
    with pytest.raises(ValueError, match=r"ref\[\d\]"):
        convert(_converter(refer_root).spec(), tmp_path / "raise", on_error="raise", workers=2)
