"""Registry of benchmarks: name -> reader, task, class list, prompt convention, metric set, evaluator.

``get_benchmark(name)`` returns a :class:`BenchmarkSpec`; ``spec.reader(root, split)`` reads the data laid out as
``spec.layout`` says (paths of the official ``tasks/*.sh`` scripts where they exist) and ``spec.evaluator(**options)``
builds the task evaluator with the benchmark's official settings (options override them, e.g.
``boundary_fn=...`` to switch EPOC on, ``seed=...`` for captions).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rsam.evaluation import evaluators as ev
from rsam.evaluation.readers import (
    CaptionReader,
    CocoDetectionReader,
    CountingReader,
    DiorXmlReader,
    DotaReader,
    MultiLabelFromBoxesReader,
    PhraseReader,
    ReferReader,
    RsvgReader,
    SceneFolderReader,
    SegmentationReader,
)
from rsam.evaluation.readers.label_rasters import (
    IGNORE_INDEX,
    ISAID_PALETTE,
    LOVEDA_VALUES,
    POTSDAM_PALETTE,
    POTSDAM_SEG_CLASSES,
)
from rsam.tasks import prompts as P

RES_METRICS = ("oIoU", "mIoU", "Prec@0.5", "Prec@0.6", "Prec@0.7", "Prec@0.8", "Prec@0.9")


@dataclass(frozen=True)
class BenchmarkSpec:
    name: str
    task: str
    class_names: tuple[str, ...]
    prompt_template: str
    metrics: tuple[str, ...]
    layout: str
    make_reader: Callable[[Path, str], object] = field(repr=False)
    make_evaluator: Callable[..., ev.Evaluator] = field(repr=False)
    default_split: str = "test"
    notes: str = ""

    def reader(self, root: str | Path, split: str | None = None):
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"{self.name}: data folder not found: {root}")
        return self.make_reader(root, split or self.default_split)

    def evaluator(self, **options) -> ev.Evaluator:
        return self.make_evaluator(**options)


def _referring_reader(dataset: str, image_subdir: str, image_dir: str, mask_dir: str):
    """refs-pickle layout when ``<root>/<dataset>/refs(unc).p`` exists, else the release's phrase-file layout."""

    def make(root: Path, split: str):
        refs = root / dataset / "refs(unc).p"
        if refs.is_file():
            return ReferReader(refs, root / dataset / "instances.json", root / image_subdir, split)
        return PhraseReader(root, split, image_dir=image_dir, mask_dir=mask_dir)

    return make


def _split_ids(path: Path) -> list[str] | None:
    return path.read_text(encoding="utf-8").split() if path.is_file() else None


def _dior_hbb_reader(root: Path, split: str):
    coco = root / "Annotations" / f"DIOR_{split}.json"
    if coco.is_file():
        return CocoDetectionReader(coco, root / "JPEGImages", P.DIOR_CLASSES)
    return DiorXmlReader(
        root / "Annotations" / "Horizontal Bounding Boxes",
        root / f"JPEGImages-{split}",
        P.DIOR_CLASSES,
        box_type="hbb",
        image_ids=_split_ids(root / "ImageSets" / "Main" / f"{split}.txt"),
    )


def _dior_obb_reader(root: Path, split: str):
    return DiorXmlReader(
        root / "Annotations" / "Oriented Bounding Boxes",
        root / f"JPEGImages-{split}",
        P.DIOR_CLASSES,
        box_type="obb",
        image_ids=_split_ids(root / "ImageSets" / "Main" / f"{split}.txt"),
    )


def _spec(
    name,
    task,
    class_names,
    make_reader,
    make_evaluator,
    metrics,
    layout,
    *,
    template=P.PROMPT_TEMPLATE,
    split="test",
    notes="",
):
    return BenchmarkSpec(
        name, task, tuple(class_names), template, tuple(metrics), layout, make_reader, make_evaluator, split, notes
    )


ISAID_SEG_CLASSES = ("background",) + P.ISAID_CLASSES
LOVEDA_SEG_CLASSES = P.LOVEDA_CLASSES

BENCHMARKS: dict[str, BenchmarkSpec] = {}


def register(spec: BenchmarkSpec) -> BenchmarkSpec:
    if spec.name in BENCHMARKS:
        raise ValueError(f"benchmark {spec.name!r} registered twice")
    BENCHMARKS[spec.name] = spec
    return spec


for _name, _subdir, _imgs, _masks in (
    ("rrsisd", "images/rrsisd/JPEGImages", "images", "masks"),
    ("refsegrs", "images/refsegrs", "images", "masks"),
    ("risbench", "images/risbench", "img_rgb", "mask"),
):
    register(
        _spec(
            _name,
            "res",
            (),
            _referring_reader(_name, _subdir, _imgs, _masks),
            lambda **o: ev.ReferringEvaluator(**o),
            RES_METRICS,
            f"<root>/{_name}/refs(unc).p + instances.json with images in <root>/{_subdir}; or <root>/{_imgs}, "
            f"<root>/{_masks}, <root>/output_phrase_<split>.txt",
            notes="metrics at 896x896 (target nearest-resized), one sample per sentence; the paper reports test",
        )
    )

register(
    _spec(
        "isaid-seg",
        "semseg",
        ISAID_SEG_CLASSES,
        lambda root, split: SegmentationReader(
            root / "images", root / "masks", ISAID_SEG_CLASSES, palette=ISAID_PALETTE
        ),
        lambda **o: ev.SemanticSegEvaluator(ISAID_SEG_CLASSES, template=P.SEG_EVAL_TEMPLATE, **o),
        ("mIoU", "mPA", "mF1"),
        "<root>/images/<stem>.png, <root>/masks/<stem>.png (iSAID RGB palette)",
        template=P.SEG_EVAL_TEMPLATE,
        notes="SEG.py: prompt with a period, mIoU and mPA over 16 classes incl. background",
    )
)
register(
    _spec(
        "potsdam-seg",
        "semseg",
        POTSDAM_SEG_CLASSES,
        lambda root, split: SegmentationReader(
            root / "images", root / "labels", POTSDAM_SEG_CLASSES, palette=POTSDAM_PALETTE, unknown_colors="error"
        ),
        lambda **o: ev.SemanticSegEvaluator(POTSDAM_SEG_CLASSES, **o),
        ("mF1", "mIoU"),
        "<root>/images/<stem>.*, <root>/labels/<stem>.png (ISPRS RGB palette)",
        notes="no official script; clutter is the unprompted class 0; mF1 over all 6 classes unless mean_classes given",
    )
)
register(
    _spec(
        "loveda-seg",
        "semseg",
        LOVEDA_SEG_CLASSES,
        lambda root, split: SegmentationReader(
            root / "images_png", root / "masks_png", LOVEDA_SEG_CLASSES, values=LOVEDA_VALUES, ignore_index=IGNORE_INDEX
        ),
        lambda **o: ev.SemanticSegEvaluator(LOVEDA_SEG_CLASSES, ignore_index=IGNORE_INDEX, **o),
        ("mIoU", "mF1"),
        "<root>/images_png/<stem>.png, <root>/masks_png/<stem>.png (values 0 no-data .. 7)",
        notes="no official script; no-data pixels ignored",
    )
)
register(
    _spec(
        "dior-det",
        "det",
        P.DIOR_CLASSES,
        _dior_hbb_reader,
        lambda **o: ev.DetectionEvaluator(P.DIOR_CLASSES, box_type="hbb", protocol="coco", **o),
        ("AP50", "AP"),
        "<root>/JPEGImages + <root>/Annotations/DIOR_<split>.json (official DIORcoco), or the DIOR "
        "release: <root>/JPEGImages-<split>, Annotations/Horizontal Bounding Boxes/*.xml, ImageSets/Main/<split>.txt",
        notes="DET.sh runs with --EPOC (threshold 0.25): pass boundary_fn for parity; images without boxes skipped",
    )
)
register(
    _spec(
        "isaid-det",
        "det",
        P.ISAID_CLASSES,
        lambda root, split: CocoDetectionReader(root / f"instances_{split}.json", root / "images", P.ISAID_CLASSES),
        lambda **o: ev.DetectionEvaluator(P.ISAID_CLASSES, box_type="hbb", protocol="coco", **o),
        ("AP50", "AP"),
        "<root>/images + <root>/instances_<split>.json (COCO format, iSAID category names)",
        split="val",
        notes="no official script; COCO AP50 as for DIOR",
    )
)
register(
    _spec(
        "dior-obb",
        "obb",
        P.DIOR_CLASSES,
        _dior_obb_reader,
        lambda **o: ev.DetectionEvaluator(P.DIOR_CLASSES, box_type="obb", protocol="voc", **o),
        ("AP50",),
        "<root>/JPEGImages-<split>, Annotations/Oriented Bounding Boxes/*.xml, ImageSets/Main/<split>.txt",
        notes="no official OBB script: DOTA-devkit VOC07 AP50 with polygon IoU",
    )
)
for _name, _box, _protocol in (("dota-v2-det", "hbb", "voc"), ("dota-v2-obb", "obb", "voc")):
    register(
        _spec(
            _name,
            "det" if _box == "hbb" else "obb",
            P.DOTA_V2_CLASSES,
            lambda root, split, _b=_box: DotaReader(
                root / "labelTxt", root / "images", P.DOTA_V2_CLASSES, box_type=_b, labels_required=False
            ),
            lambda _b=_box, _p=_protocol, **o: ev.DetectionEvaluator(
                P.DOTA_V2_CLASSES, box_type=_b, protocol=_p, tiled=True, **{"submission": True, **o}
            ),
            ("AP50",),
            "<root>/images/<name>.png + <root>/labelTxt/<name>.txt (DOTA v2 original images; without labelTxt, "
            "e.g. test-dev: submission files only)",
            split="val",
            notes="896x896 patches, 200 px overlap, devkit merge; DET_DOTA.sh runs without EPOC; DOTA-devkit AP50; "
            "rsam test writes the Task1/Task2 submission files",
        )
    )
register(
    _spec(
        "rsvg",
        "vg",
        (),
        lambda root, split: RsvgReader(root / "Annotations", root / "JPEGImages", root / f"{split}.txt"),
        lambda **o: ev.GroundingEvaluator(**o),
        ("Acc@0.5", "mIoU"),
        "<root>/JPEGImages, <root>/Annotations/*.xml, <root>/<split>.txt (global object indices)",
        notes="paper's 'AP50' = Acc@0.5",
    )
)
register(
    _spec(
        "dior-mlc",
        "mlc",
        P.DIOR_CLASSES,
        lambda root, split: MultiLabelFromBoxesReader(_dior_hbb_reader(root, split)),
        lambda **o: ev.MultiLabelEvaluator(P.DIOR_CLASSES, **o),
        ("accuracy",),
        "as dior-det",
        notes="accuracy = (TP + TN) / all image x class decisions",
    )
)
register(
    _spec(
        "dotav2-mlc",
        "mlc",
        P.DOTA_V2_CLASSES,
        lambda root, split: MultiLabelFromBoxesReader(
            DotaReader(root / "annfiles", root / "images", P.DOTA_V2_CLASSES)
        ),
        lambda **o: ev.MultiLabelEvaluator(P.DOTA_V2_CLASSES, **o),
        ("accuracy",),
        "<root>/images (896 px patches) + <root>/annfiles/<name>.txt",
        split="val",
        notes="the official script reads patch annotation files; the DOTA test split has no labels",
    )
)
register(
    _spec(
        "ucm-mcc",
        "mcc",
        P.UCM_SCENE_CLASSES,
        lambda root, split: SceneFolderReader(root / "Images", P.UCM_SCENE_CLASSES),
        lambda **o: ev.SceneEvaluator(P.UCM_SCENE_CLASSES, **o),
        ("accuracy",),
        "<root>/Images/<class folder>/*.tif",
        split="all",
        notes="all images, no split (MCC.py)",
    )
)
register(
    _spec(
        "aid-mcc",
        "mcc",
        P.AID_SCENE_CLASSES,
        lambda root, split: SceneFolderReader(root, P.AID_SCENE_CLASSES),
        lambda **o: ev.SceneEvaluator(P.AID_SCENE_CLASSES, **o),
        ("accuracy",),
        "<root>/<class folder>/*.jpg",
        split="all",
    )
)
for _name, _classes, _priors in (
    ("dior-cnt", P.DIOR_CLASSES, P.DIOR_COUNT_PRIORS),
    ("dota-cnt", tuple(P.DOTA_COUNT_PRIORS), P.DOTA_COUNT_PRIORS),
):
    register(
        _spec(
            _name,
            "count",
            _classes,
            lambda root, split, _c=_classes: CountingReader(
                root / "Annotation" / f"{split}_IMG_CT.json", root / "Images", _c
            ),
            lambda _p=_priors, **o: ev.CountingEvaluator(priors=_p, **o),
            ("accuracy",),
            "<root>/Images + <root>/Annotation/<split>_IMG_CT.json (Falcon conversation format)",
            notes="CNT.sh runs with --EPOC (threshold 0.15): pass boundary_fn for parity; prior-area filter 0.8",
        )
    )
register(
    _spec(
        "ucm-cap",
        "caption",
        P.UCM_CAPTION_CLASSES,
        lambda root, split: CaptionReader(root / "dataset.json", root / "Images", split, P.UCM_CAPTION_CLASSES),
        lambda **o: ev.CaptionEvaluator(P.UCM_CAPTION_CLASSES, **o),
        ("CIDEr", "CIDEr-D", "BLEU-4", "ROUGE-L"),
        "<root>/Images + <root>/dataset.json (Karpathy format)",
        notes="2x2 regions, seeded captions; CIDEr is the original CIDEr (x10; the paper prints x100)",
    )
)


def get_benchmark(name: str) -> BenchmarkSpec:
    try:
        return BENCHMARKS[name]
    except KeyError:
        raise KeyError(f"unknown benchmark {name!r}; known: {', '.join(sorted(BENCHMARKS))}") from None


def benchmark_names() -> Sequence[str]:
    return sorted(BENCHMARKS)
