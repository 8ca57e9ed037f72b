"""Every benchmark reader on a tiny sample written in that exact format; the restricted unpickler; the registry."""

import json
import os
import pickle

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from rsam.data.refer import load_refs
from rsam.evaluation import benchmark_names, get_benchmark
from rsam.evaluation.readers import (
    CaptionReader,
    CocoDetectionReader,
    CountingReader,
    DiorXmlReader,
    DotaReader,
    MultiLabelFromBoxesReader,
    MultiLabelTableReader,
    PhraseReader,
    ReferReader,
    RsvgReader,
    SceneFolderReader,
    SceneListReader,
    SegmentationReader,
)
from rsam.evaluation.readers.label_rasters import ISAID_PALETTE, LOVEDA_VALUES
from rsam.safe_pickle import UnsafePickleError, safe_load_pickle
from rsam.tasks.prompts import DIOR_CLASSES, DOTA_COUNT_PRIORS, DOTA_V2_CLASSES, UCM_SCENE_CLASSES


def _image(path, size=(8, 6)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((size[1], size[0], 3), np.uint8)).save(path)
    return path


def _rle(mask):
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


class Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_restricted_unpickler_allows_containers_and_refuses_code(tmp_path):
    good = tmp_path / "good.p"
    good.write_bytes(pickle.dumps([{"a": (1, 2.5, None, True), "b": {"x"}, "c": b"raw"}], protocol=2))
    assert safe_load_pickle(good) == [{"a": (1, 2.5, None, True), "b": {"x"}, "c": b"raw"}]
    bad = tmp_path / "bad.p"
    bad.write_bytes(pickle.dumps([Exploit()]))
    with pytest.raises(UnsafePickleError, match="posix.system|os.system"):
        safe_load_pickle(bad)
    (tmp_path / "broken.p").write_bytes(b"\x80\x04garbage")
    with pytest.raises(ValueError, match="cannot read pickle"):
        safe_load_pickle(tmp_path / "broken.p")
    # the data engine reads refs with the same unpickler: same containers, same refusal
    assert load_refs(good) == safe_load_pickle(good)
    with pytest.raises(UnsafePickleError, match="refusing to load global (posix|os).system"):
        load_refs(bad)
    py2 = tmp_path / "py2.p"  # a Python 2 protocol-0 pickle: __builtin__ names, byte strings
    py2.write_bytes(
        b"(lp0\n(dp1\nS'split'\np2\nS'test'\np3\nsS'ids'\np4\nc__builtin__\nset\np5\n((lp6\nI1\naI2\natp7\nRp8\nsa."
    )
    assert load_refs(py2) == [{"split": "test", "ids": {1, 2}}]


def _write_refer(tmp_path, segmentation, sentences=None, size=(6, 8)):
    h, w = size
    refs = [
        {
            "ref_id": 7,
            "ann_id": 70,
            "image_id": 1,
            "split": "test",
            "category_id": 1,
            "sentences": sentences
            if sentences is not None
            else [{"raw": "the ship", "sent_id": 0}, {"raw": "a boat", "sent_id": 1}],
        },
        {"ref_id": 8, "ann_id": 80, "image_id": 1, "split": "train", "sentences": [{"raw": "x"}]},
    ]
    (tmp_path / "refs(unc).p").write_bytes(pickle.dumps(refs))
    instances = {
        "images": [{"id": 1, "file_name": "img1.jpg", "height": h, "width": w}],
        "annotations": [{"id": 70, "image_id": 1, "segmentation": segmentation, "category_id": 1}],
        "categories": [{"id": 1, "name": "ship"}],
    }
    (tmp_path / "instances.json").write_text(json.dumps(instances))
    return ReferReader(tmp_path / "refs(unc).p", tmp_path / "instances.json", tmp_path / "images", "test")


def test_refer_reader_one_sample_per_sentence_and_overlap_rule(tmp_path):
    part1 = np.zeros((6, 8), bool)
    part1[1:4, 1:4] = True
    part2 = np.zeros((6, 8), bool)
    part2[2:5, 2:6] = True
    reader = _write_refer(tmp_path, [_rle(part1), _rle(part2)])
    samples = list(reader)
    assert len(reader) == 2 and [s.text for s in samples] == ["the ship", "a boat"]
    assert samples[0].key == "7:0" and samples[0].image_path == tmp_path / "images" / "img1.jpg"
    np.testing.assert_array_equal(samples[0].target, part1 ^ part2)  # pixels covered twice are dropped


def test_refer_reader_polygons_and_rejections(tmp_path):
    reader = _write_refer(tmp_path, [[1, 1, 5, 1, 5, 4, 1, 4]])
    target = next(iter(reader)).target
    assert target.dtype == bool and target[2, 3] and not target[0, 0]
    bad_size = np.zeros((5, 8), bool)
    with pytest.raises(ValueError, match="RLE size"):
        next(iter(_write_refer(tmp_path, [_rle(bad_size)])))
    with pytest.raises(ValueError, match="uncompressed"):
        next(iter(_write_refer(tmp_path, [{"size": [6, 8], "counts": [48]}])))
    with pytest.raises(ValueError, match="empty or malformed"):
        next(iter(_write_refer(tmp_path, [])))
    with pytest.raises(ValueError, match="empty sentence"):
        _write_refer(tmp_path, [[1, 1, 5, 1, 5, 4]], sentences=[{"raw": "  "}])
    with pytest.raises(ValueError, match="no sentences"):
        _write_refer(tmp_path, [[1, 1, 5, 1, 5, 4]], sentences=[])


def test_phrase_reader_refsegrs_layout(tmp_path):
    _image(tmp_path / "images" / "12.tif")
    mask = np.zeros((6, 8), np.uint8)
    mask[2:4, 3:5] = 255
    (tmp_path / "masks").mkdir()
    Image.fromarray(mask).save(tmp_path / "masks" / "12.tif")
    (tmp_path / "output_phrase_test.txt").write_text("12 the long road on the left\n\n12 road\n")
    samples = list(PhraseReader(tmp_path, "test"))
    assert [s.text for s in samples] == ["the long road on the left", "road"]
    assert samples[0].target.sum() == 4 and samples[0].image_path.name == "12.tif"


def test_segmentation_reader_palette_and_values(tmp_path):
    label = np.zeros((2, 3, 3), np.uint8)
    label[0, 0] = (0, 0, 63)  # ship -> 1
    label[0, 1] = (0, 100, 155)  # harbor -> 15
    label[1, 2] = (9, 9, 9)  # unknown colour -> background (official)
    (tmp_path / "masks").mkdir()
    Image.fromarray(label).save(tmp_path / "masks" / "P0001.png")
    _image(tmp_path / "images" / "P0001.png")
    classes = ["background"] + [str(i) for i in range(15)]
    sample = next(iter(SegmentationReader(tmp_path / "images", tmp_path / "masks", classes, palette=ISAID_PALETTE)))
    np.testing.assert_array_equal(sample.target, [[1, 15, 0], [0, 0, 0]])
    strict = SegmentationReader(
        tmp_path / "images", tmp_path / "masks", classes, palette=ISAID_PALETTE, unknown_colors="error"
    )
    with pytest.raises(ValueError, match=r"\(9, 9, 9\)"):
        next(iter(strict))
    (tmp_path / "lmasks").mkdir()
    Image.fromarray(np.array([[0, 1, 7]], np.uint8)).save(tmp_path / "lmasks" / "P0001.png")
    loveda = SegmentationReader(tmp_path / "images", tmp_path / "lmasks", list("abcdefg"), values=LOVEDA_VALUES)
    np.testing.assert_array_equal(next(iter(loveda)).target, [[255, 0, 6]])
    (tmp_path / "lmasks" / "P0001.png").write_bytes(b"")  # an empty label file: one error naming it
    with pytest.raises(ValueError, match="cannot read .*P0001.png"):
        next(iter(loveda))


DIOR_XML = """<annotation><filename>{name}.jpg</filename><size><width>800</width><height>800</height></size>
<object><name>airplane</name><difficult>0</difficult><bndbox><xmin>10</xmin><ymin>20</ymin><xmax>30</xmax>
<ymax>40</ymax></bndbox><robndbox><x_left_top>10</x_left_top><y_left_top>20</y_left_top><x_right_top>30</x_right_top>
<y_right_top>22</y_right_top><x_right_bottom>28</x_right_bottom><y_right_bottom>40</y_right_bottom>
<x_left_bottom>8</x_left_bottom><y_left_bottom>38</y_left_bottom></robndbox></object>
<object><name>Expressway-Service-area</name><bndbox><xmin>1</xmin><ymin>2</ymin><xmax>3</xmax><ymax>4</ymax>
</bndbox><robndbox><x_left_top>1</x_left_top><y_left_top>2</y_left_top><x_right_top>3</x_right_top>
<y_right_top>2</y_right_top><x_right_bottom>3</x_right_bottom><y_right_bottom>4</y_right_bottom>
<x_left_bottom>1</x_left_bottom><y_left_bottom>4</y_left_bottom></robndbox></object></annotation>"""


def test_dior_xml_reader_hbb_obb_and_unknown_class(tmp_path):
    (tmp_path / "xml").mkdir()
    (tmp_path / "xml" / "00001.xml").write_text(DIOR_XML.format(name="00001"))
    (tmp_path / "xml" / "00002.xml").write_text("<annotation><filename>00002.jpg</filename></annotation>")
    hbb = list(DiorXmlReader(tmp_path / "xml", tmp_path / "img", DIOR_CLASSES))
    assert [s.key for s in hbb] == ["00001"]  # the image without objects is skipped (official DIOR protocol)
    np.testing.assert_array_equal(hbb[0].target.boxes, [[10, 20, 30, 40], [1, 2, 3, 4]])
    np.testing.assert_array_equal(hbb[0].target.labels, [0, DIOR_CLASSES.index("expressway-service-area")])
    obb = next(iter(DiorXmlReader(tmp_path / "xml", tmp_path / "img", DIOR_CLASSES, box_type="obb")))
    np.testing.assert_array_equal(obb.target.boxes[0], [10, 20, 30, 22, 28, 40, 8, 38])
    (tmp_path / "xml" / "00003.xml").write_text(DIOR_XML.format(name="x").replace("airplane", "spaceship"))
    with pytest.raises(ValueError, match="spaceship"):
        list(DiorXmlReader(tmp_path / "xml", tmp_path / "img", DIOR_CLASSES))


def test_coco_detection_reader_maps_categories_by_name(tmp_path):
    data = {
        "images": [{"id": 5, "file_name": "b.jpg"}, {"id": 6, "file_name": "a.jpg"}],
        "annotations": [{"id": 1, "image_id": 5, "category_id": 3, "bbox": [1, 2, 10, 20]}],
        "categories": [{"id": 3, "name": "storagetank"}, {"id": 4, "name": "ship"}],
    }
    (tmp_path / "gt.json").write_text(json.dumps(data))
    samples = list(CocoDetectionReader(tmp_path / "gt.json", tmp_path, DIOR_CLASSES))
    assert len(samples) == 1 and samples[0].image_path.name == "b.jpg"
    np.testing.assert_array_equal(samples[0].target.boxes, [[1, 2, 11, 22]])
    assert samples[0].target.labels.tolist() == [DIOR_CLASSES.index("storagetank")]
    mlc = next(iter(MultiLabelFromBoxesReader(CocoDetectionReader(tmp_path / "gt.json", tmp_path, DIOR_CLASSES))))
    assert mlc.target.sum() == 1 and mlc.target[DIOR_CLASSES.index("storagetank")]


def test_dota_reader_obb_hbb_headers_difficult(tmp_path):
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "P0001.txt").write_text(
        "imagesource:GoogleEarth\ngsd:0.14\n10 10 20 10 20 30 10 30 plane 0\n"
        "1.5 2 8 2 8 9 1.5 9 storage-tank 1\n40 40 50 40 50 50 40 50 small-vehicle\n"
    )
    _image(tmp_path / "images" / "P0001.png")
    sample = next(iter(DotaReader(tmp_path / "labels", tmp_path / "images", DOTA_V2_CLASSES)))
    assert sample.target.boxes.shape == (3, 8)
    assert [DOTA_V2_CLASSES[i] for i in sample.target.labels] == ["airplane", "storagetank", "small-vehicle"]
    assert sample.target.difficult.tolist() == [False, True, False]
    hbb = next(iter(DotaReader(tmp_path / "labels", tmp_path / "images", DOTA_V2_CLASSES, box_type="hbb")))
    np.testing.assert_array_equal(hbb.target.boxes[1], [1.5, 2, 8, 9])


def test_rsvg_reader_global_object_indices(tmp_path):
    (tmp_path / "ann").mkdir()
    obj = (
        "<object><bndbox><xmin>{0}</xmin><ymin>1</ymin><xmax>9</xmax><ymax>9</ymax></bndbox>"
        "<description>{1}</description></object>"
    )
    (tmp_path / "ann" / "a.xml").write_text(
        f"<annotation><filename>a.jpg</filename>{obj.format(0, 'first')}{obj.format(1, 'second')}</annotation>"
    )
    (tmp_path / "ann" / "b.xml").write_text(
        f"<annotation><filename>b.jpg</filename>{obj.format(2, 'third')}</annotation>"
    )
    (tmp_path / "test.txt").write_text("2\n1\n")
    samples = list(RsvgReader(tmp_path / "ann", tmp_path / "img", tmp_path / "test.txt"))
    assert [(s.key, s.text, s.image_path.name) for s in samples] == [("1", "second", "a.jpg"), ("2", "third", "b.jpg")]
    np.testing.assert_array_equal(samples[1].target, [2, 1, 9, 9])
    (tmp_path / "bad.txt").write_text("5\n")
    with pytest.raises(ValueError, match="do not exist"):
        RsvgReader(tmp_path / "ann", tmp_path / "img", tmp_path / "bad.txt")


def test_multi_label_table_and_scene_readers(tmp_path):
    _image(tmp_path / "img" / "agricultural00.tif")
    (tmp_path / "labels.txt").write_text("IMAGE\\LABEL\tairplane\tship\nagricultural00\t0\t1\n")
    sample = next(iter(MultiLabelTableReader(tmp_path / "labels.txt", tmp_path / "img")))
    assert sample.target.tolist() == [False, True]
    _image(tmp_path / "ucm" / "baseballdiamond" / "b01.tif")
    _image(tmp_path / "ucm" / "storagetanks" / "s01.tif")
    samples = list(SceneFolderReader(tmp_path / "ucm", UCM_SCENE_CLASSES))
    assert [UCM_SCENE_CLASSES[s.target] for s in samples] == ["baseballfield", "storagetank"]
    (tmp_path / "list.txt").write_text("ucm/storagetanks/s01.tif storagetank\n")
    assert next(
        iter(SceneListReader(tmp_path / "list.txt", tmp_path, UCM_SCENE_CLASSES))
    ).target == UCM_SCENE_CLASSES.index("storagetank")


def test_counting_and_caption_readers(tmp_path):
    data = [
        {
            "images": ["/x/y/img_3.png"],
            "conversations": [{"content": "Please count the number of storage tank."}, {"content": "4"}],
        },
        {"images": ["z.png"], "conversations": [{"content": "the number of crane."}, {"content": "0"}]},
    ]
    (tmp_path / "cnt.json").write_text(json.dumps(data))
    samples = list(CountingReader(tmp_path / "cnt.json", tmp_path / "Images", tuple(DOTA_COUNT_PRIORS)))
    assert [(s.text, s.target, s.image_path.name) for s in samples] == [
        ("storagetank", 4, "img_3.png"),
        ("container-crane", 0, "z.png"),
    ]
    karpathy = {
        "images": [
            {"filename": "2.tif", "imgid": 2, "split": "test", "sentences": [{"raw": "A road."}, {"raw": "Trees."}]},
            {"filename": "1.tif", "imgid": 1, "split": "train", "sentences": [{"raw": "x"}]},
        ]
    }
    (tmp_path / "dataset.json").write_text(json.dumps(karpathy))
    caps = list(CaptionReader(tmp_path / "dataset.json", tmp_path, "test", ["road"]))
    assert [(s.key, s.target) for s in caps] == [("2", ["A road.", "Trees."])]


def test_registry_covers_every_task():
    tasks = {get_benchmark(name).task for name in benchmark_names()}
    assert tasks == {"res", "semseg", "det", "obb", "vg", "mlc", "mcc", "count", "caption"}
    spec = get_benchmark("isaid-seg")
    assert spec.class_names[0] == "background" and spec.prompt_template == "{} in the image."
    assert get_benchmark("dota-cnt").evaluator().priors["vehicle"] == 21
    with pytest.raises(KeyError, match="unknown benchmark"):
        get_benchmark("nope")
