"""Datasets as WebDataset shards: format and writer, converters (refer layout, COCO data engine, embedded demo),
readers, samplers and inspection. See ``docs/shards.md``.

``default_demo_dir()`` is where ``rsam data demo`` writes the demo dataset (``data/demo`` of the checkout).
"""

from rsam.data.demo import default_demo_dir

__all__ = ["default_demo_dir"]
