"""The data engine (``rsam data from-coco``): rules, ambiguity, box-only masks, one-to-zero, VLM and scorer stubs."""

from __future__ import annotations

import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from helpers.shard_utils import read_samples
from PIL import Image

from rsam.cli.main import main as rsam_main
from rsam.data.engine import CocoEngine, EngineOptions
from rsam.data.expressions import Instance, candidate_expressions, colour_name, plural, select_unique
from rsam.data.pipeline import convert
from rsam.data.records import decode_mask_png
from rsam.data.vlm import VLMClient, normalise_category

H, W = 60, 90


def _instance(ann_id, category, box, rgb=None):
    mask = np.zeros((H, W), bool)
    x0, y0, x1, y1 = box
    mask[y0:y1, x0:x1] = True
    rgb = rgb if rgb is not None else np.full((H, W, 3), 128, np.uint8)
    return Instance.from_mask(ann_id, category, mask, rgb)


@pytest.mark.parametrize(
    "rgb, name",
    [
        ((250, 250, 250), "white"),
        ((20, 20, 20), "black"),
        ((128, 128, 128), "gray"),
        ((220, 30, 30), "red"),
        ((30, 180, 40), "green"),
        ((30, 60, 200), "blue"),
        ((230, 220, 40), "yellow"),
        ((120, 70, 30), "brown"),
    ],
)
def test_colour_names(rgb, name):
    assert colour_name(rgb) == name


def test_plural_and_category_normalisation():
    assert [plural(w) for w in ("tree", "bus", "storage tank", "city", "day")] == [
        "trees",
        "buses",
        "storage tanks",
        "cities",
        "days",
    ]
    assert normalise_category("Storage_Tanks") == "storage tank" and normalise_category("cities") == "city"


def test_rules_keep_only_unambiguous_expressions():
    rgb = np.full((H, W, 3), 128, np.uint8)
    rgb[:, 60:] = (220, 30, 30)
    cars = [
        _instance(1, "car", (2, 2, 12, 10), rgb),  # top left, small, gray
        _instance(2, "car", (30, 40, 50, 58), rgb),  # bottom, large, gray
        _instance(3, "car", (62, 5, 74, 15), rgb),  # top right, red
    ]
    ship = _instance(9, "ship", (20, 20, 30, 30), rgb)
    candidates = {c.text: set(c.targets) for c in candidate_expressions("car", cars, [ship], W, H)}
    assert candidates["the leftmost car"] == {1}
    assert candidates["the largest of the 3 cars"] == {2}
    assert candidates["the smallest of the 3 cars"] == {1}
    assert candidates["the red car"] == {3}
    assert candidates["the gray car"] == {1, 2}  # ambiguous
    assert candidates["the car in the top left of the image"] == {1}
    assert candidates["the car below the ship"] == {2}
    assert candidates["the car to the right of the ship"] == {2, 3}
    assert "the only car in the image" not in candidates
    kept, ambiguous, over = select_unique(list(candidate_expressions("car", cars, [ship], W, H)), limit=3)
    assert [c.rule for c in kept] == ["size", "position", "colour"]  # one per rule in turn
    assert all(len(c.targets) == 1 for c in kept)
    assert ambiguous == sum(1 for targets in candidates.values() if len(targets) > 1)
    assert over == sum(1 for targets in candidates.values() if len(targets) == 1) - 3
    only = {c.text for c in candidate_expressions("ship", [ship], cars, W, H)}
    assert "the only ship in the image" in only


def _write_coco(tmp_path, *, extra_images=0):
    images = tmp_path / "images"
    images.mkdir()
    pixels = np.full((H, W, 3), 90, np.uint8)
    pixels[:, 60:] = (220, 30, 30)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    entries = []
    for number in range(1 + extra_images):
        (images / f"img{number}.png").write_bytes(buffer.getvalue())
        entries.append({"id": number + 1, "file_name": f"img{number}.png", "width": W, "height": H, "license": 1})
    coco = {
        "licenses": [{"id": 1, "name": "CC0-1.0", "url": "u", "attribution": "made in a test"}],
        "categories": [
            {"id": 1, "name": "car", "supercategory": "vehicle"},
            {"id": 2, "name": "truck", "supercategory": "vehicle"},
            {"id": 3, "name": "building", "supercategory": "building"},
            {"id": 4, "name": "pond", "supercategory": "water"},
        ],
        "images": entries,
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 1, "bbox": [2, 2, 10, 8], "segmentation": []},
            {"id": 11, "image_id": 1, "category_id": 1, "bbox": [62, 5, 12, 10]},
            {"id": 12, "image_id": 1, "category_id": 3, "segmentation": [[20, 30, 50, 30, 50, 55, 20, 55]]},
        ],
    }
    (tmp_path / "instances.json").write_text(json.dumps(coco))
    return tmp_path / "instances.json", images


def _read(folder):
    return {key: (json.loads(s["json"]), decode_mask_png(s["mask.png"])) for key, s in read_samples(folder).items()}


def test_engine_triplets_box_masks_and_one_to_zero(tmp_path):
    instances, images = _write_coco(tmp_path)
    engine = CocoEngine(instances, images, EngineOptions(source="toy", zero_per_image=2, max_one_to_one=2))
    report = convert(engine.spec(), tmp_path / "out", on_error="raise")
    assert (report["inputs"], report["written"], report["rejected"]) == (1, 1, 0)
    samples = _read(tmp_path / "out")
    by_text = {record["text"]: (record, mask) for record, mask in samples.values()}
    record, mask = by_text["car in the image"]
    expected = np.zeros((H, W), bool)
    expected[2:10, 2:12] = True
    expected[5:15, 62:74] = True
    np.testing.assert_array_equal(mask, expected)
    assert (record["kind"], record["mask_type"], record["licence"], record["attribution"]) == (
        "one-to-many",
        "box",
        "CC0-1.0",
        "made in a test",
    )
    assert sorted(record["ann_ids"]) == [10, 11]
    zero = [(r, m) for r, m in samples.values() if r["kind"] == "one-to-zero"]
    # truck shares the 'vehicle' supercategory with the cars present, so only 'pond' is truly absent
    assert [r["text"] for r, _ in zero] == ["pond in the image"] and not zero[0][1].any()
    ones = [(r, m) for r, m in samples.values() if r["kind"] == "one-to-one"]
    assert {r["text"] for r, _ in ones} >= {"the only building in the image"}
    for r, _ in ones:
        assert len(r["ann_ids"]) == 1
    assert by_text["building in the image"][0]["mask_type"] == "polygon"
    assert report["splits"]["train"]["dropped"].get("ambiguous", 0) >= 1


class _StubVLM(BaseHTTPRequestHandler):
    requests: list = []

    def do_POST(self):  # noqa: N802 - http.server API
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append(body)
        content = body["messages"][-1]["content"]
        if isinstance(content, list):  # caption request with the image
            answer = "Two cars and a large grey building with a flat roof."
        else:
            answer = (
                '```json\n{"cars": "Two small cars parked near the building.", '
                '"building": "A large grey building with a flat roof in the lower middle of the image '
                'next to several parked cars and a road", "helicopter": "A helicopter."}\n```'
            )
        payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": answer}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture()
def vlm_server():
    _StubVLM.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _StubVLM)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


def test_vlm_descriptions_are_matched_filtered_and_cached(tmp_path, vlm_server):
    instances, images = _write_coco(tmp_path)
    cache = tmp_path / "vlm.jsonl"
    client = VLMClient(vlm_server, "qwen-stub", api_key="k", cache_path=cache)
    engine = CocoEngine(instances, images, EngineOptions(zero_per_image=0, max_one_to_one=0), vlm=client)
    report = convert(engine.spec(), tmp_path / "out", on_error="raise")
    caption_request, parse_request = _StubVLM.requests
    assert caption_request["model"] == "qwen-stub"
    image_part = caption_request["messages"][0]["content"][1]["image_url"]["url"]
    assert image_part.startswith("data:image/png;base64,")
    assert "no more than 20 words" in parse_request["messages"][0]["content"]
    vlm = [r for r, _ in _read(tmp_path / "out").values() if r["rule"] == "vlm"]
    assert [(r["text"], r["category"], r["kind"]) for r in vlm] == [
        ("Two small cars parked near the building.", "car", "one-to-many")
    ]
    dropped = report["splits"]["train"]["dropped"]
    assert dropped["vlm_too_long"] == 1 and dropped["vlm_unmatched"] == 1
    again = VLMClient(vlm_server, "qwen-stub", cache_path=cache)
    assert again.describe((images / "img0.png").read_bytes(), "png", ["building", "car"])
    assert again.requests == 0 and len(_StubVLM.requests) == 2


def stub_scorer(region: np.ndarray, text: str) -> float:
    """Scores 1 for regions that are mostly red, else 0 (a stand-in for an image-text model)."""
    return float((region[..., 0] > 200).mean() > 0.5)


def test_scorer_filters_low_scores_through_the_cli(tmp_path, capsys):
    instances, images = _write_coco(tmp_path)
    code = rsam_main(
        [
            "data",
            "from-coco",
            "--instances",
            str(instances),
            "--images",
            str(images),
            "--out",
            str(tmp_path / "out"),
            "--zero-per-image",
            "0",
            "--max-one-to-one",
            "0",
            "--scorer",
            "test_data_engine:stub_scorer",
            "--min-score",
            "0.5",
        ]
    )
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    records = [r for r, _ in _read(tmp_path / "out").values()]
    # the car union spans gray and red pixels (mostly gray) and the building is gray: both dropped
    assert records == [] and report["splits"]["train"]["dropped"]["low_score"] == 2


def test_bad_image_rejects_the_whole_image(tmp_path):
    instances, images = _write_coco(tmp_path, extra_images=1)
    (images / "img1.png").write_bytes(b"not a png")
    engine = CocoEngine(instances, images, EngineOptions(zero_per_image=0))
    report = convert(engine.spec(), tmp_path / "out", on_error="skip")
    assert (report["inputs"], report["written"], report["rejected"]) == (2, 1, 1)
    reject = json.loads((tmp_path / "out" / "rejects.jsonl").read_text())
    assert "img1.png" in reject["reason"] and "cannot decode" in reject["reason"]


def test_reencode_on_request_only(tmp_path, capsys):
    instances, images = _write_coco(tmp_path)
    original = (images / "img0.png").read_bytes()
    args = ["data", "from-coco", "--instances", str(instances), "--images", str(images), "--zero-per-image", "0"]
    assert rsam_main(args + ["--out", str(tmp_path / "kept")]) == 0
    assert rsam_main(args + ["--out", str(tmp_path / "jpg"), "--reencode", "jpg"]) == 0
    capsys.readouterr()
    kept = next(iter(read_samples(tmp_path / "kept").values()))
    assert kept["png"] == original and "reencoded" not in json.loads(kept["json"])
    converted = next(iter(read_samples(tmp_path / "jpg").values()))
    assert json.loads(converted["json"])["reencoded"] == "jpg"
    with Image.open(io.BytesIO(converted["jpg"])) as image:
        assert image.format == "JPEG" and image.size == (W, H)


def test_duplicate_ids_and_orphan_annotations_are_rejects_that_reconcile(tmp_path):
    """Issue 13, case 12: a duplicated image id (both images), a duplicated annotation id (its image) and an annotation
    on an unknown image id are each a reject with a reason; every image and annotation record is accounted for."""
    instances, images = _write_coco(tmp_path, extra_images=4)  # images 1..5
    coco = json.loads(instances.read_text())
    coco["images"][4]["id"] = 4  # img4.png reuses img3.png's id 4
    coco["annotations"] += [
        {"id": 20, "image_id": 2, "category_id": 1, "bbox": [2, 2, 10, 8]},
        {"id": 21, "image_id": 3, "category_id": 1, "bbox": [2, 2, 10, 8]},
        {"id": 21, "image_id": 3, "category_id": 1, "bbox": [2, 2, 10, 8]},  # the same ship listed twice
        {"id": 30, "image_id": 4, "category_id": 3, "bbox": [2, 2, 10, 8]},
        {"id": 40, "image_id": 99, "category_id": 1, "bbox": [2, 2, 10, 8]},  # no image 99
    ]
    instances.write_text(json.dumps(coco))
    engine = CocoEngine(instances, images, EngineOptions(zero_per_image=0))
    report = convert(engine.spec(), tmp_path / "out", on_error="skip")
    rejects = [json.loads(line) for line in (tmp_path / "out" / "rejects.jsonl").read_text().splitlines()]
    reasons = {reject["input"]: reject["reason"] for reject in rejects}
    assert sorted(reasons) == [
        "annotation 40 (image_id 99)",
        "image 3 (img2.png)",
        "image 4 (img3.png)",
        "image 4 (img4.png)",
    ]
    assert "image id 4 is used by 2 images (img3.png, img4.png)" in reasons["image 4 (img3.png)"]
    assert "image id 4 is used by 2 images" in reasons["image 4 (img4.png)"]
    assert "annotation id 21 appears 2 times" in reasons["image 3 (img2.png)"]
    assert "image_id 99 is not in the instances' images" in reasons["annotation 40 (image_id 99)"]
    # every input record reconciles: 5 image entries + 1 orphan annotation = written + rejected
    assert (report["inputs"], report["written"], report["rejected"], report["reconciled"]) == (6, 2, 4, True)
    records = [record for record, _ in _read(tmp_path / "out").values()]
    written_images = {record["image_id"] for record in records}
    assert written_images == {1, 2}
    rejected_images = {3, 4}
    for ann in coco["annotations"]:  # each annotation: in a written image's records, in a rejected image, or rejected
        written = any(ann["id"] in record["ann_ids"] for record in records)
        assert written or ann["image_id"] in rejected_images or f"annotation {ann['id']} (image_id 99)" in reasons
        assert written == (ann["image_id"] in written_images)
