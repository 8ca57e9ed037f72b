"""Randomized COCO detection cases and the pycocotools COCOeval reference run on them."""

import contextlib
import io

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval


def cocoeval_stats(gt: dict, dets: list, cat_ids=None):
    """pycocotools COCOeval on the raw COCO dicts (default Params: float64 thresholds, maxDets 1/10/100)."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
        evaluator = COCOeval(coco, coco.loadRes(dets) if dets else COCO(), "bbox")
        if cat_ids is not None:
            evaluator.params.catIds = cat_ids
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator.stats


def random_coco_case(seed: int, n_classes: int = 5):
    """Random COCO gt / results with float coordinates, scores on a coarse grid (many ties), some images above
    100 detections (maxDets cut-off), one class without ground truth and one class without detections."""
    rng = np.random.default_rng(seed)
    gt = {"images": [], "annotations": [], "categories": [{"id": c, "name": f"c{c}"} for c in range(n_classes)]}
    dets = []
    no_det = n_classes - 2  # ground truth only: no detection; class n_classes - 1: detections only, no ground truth
    for position, image_id in enumerate(rng.permutation(np.arange(1, 8)).tolist()):  # ids listed out of order
        gt["images"].append({"id": image_id, "width": 200, "height": 200})
        n_gt = int(rng.integers(0, 12))
        gt_xy = rng.uniform(0, 150, (n_gt, 2))
        gt_wh = rng.uniform(4, 50, (n_gt, 2))
        gt_cls = rng.integers(0, no_det + 1, n_gt)  # classes 0..no_det: never the no-gt class
        for xy, wh, c in zip(gt_xy, gt_wh, gt_cls):
            gt["annotations"].append(
                {
                    "id": len(gt["annotations"]) + 1,
                    "image_id": image_id,
                    "category_id": int(c),
                    "bbox": [*xy.tolist(), *wh.tolist()],
                    "area": float(wh[0] * wh[1]),
                    "iscrowd": 0,
                }
            )
        n_det = 140 if position == 0 else int(rng.choice([0, 5, 30, 140]))
        for _ in range(n_det):
            c = int(rng.choice([k for k in range(n_classes) if k != no_det]))
            same = [i for i in range(n_gt) if gt_cls[i] == c]
            if same and rng.random() < 0.7:  # near a gt box of that class: IoUs spread over the thresholds
                i = int(rng.choice(same))
                xy, wh = gt_xy[i] + rng.normal(0, 3, 2), gt_wh[i] * rng.uniform(0.7, 1.3, 2)
            else:
                xy, wh = rng.uniform(0, 150, 2), rng.uniform(4, 50, 2)
            xy, wh = np.clip(xy, 0, 150), np.clip(wh, 1, 50)  # inside the 200 x 200 image
            score = float(rng.integers(1, 8)) / 8  # 7 distinct values: ties within and across images
            dets.append({"image_id": image_id, "category_id": c, "bbox": [*xy.tolist(), *wh.tolist()], "score": score})
    return gt, dets
