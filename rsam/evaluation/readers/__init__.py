"""Benchmark readers, one module per dataset family; each yields :class:`rsam.evaluation.samples.Sample` items.

=====================  =====================================================================================
module                 datasets / formats
=====================  =====================================================================================
``rrsisd``             RRSIS-D-style ``refs(unc).p`` + ``instances.json`` (RRSIS-D, RefSegRS, RISBench)
``refsegrs``           RefSegRS / RISBench release layout (phrase file + image and mask folders)
``label_rasters``      semantic-segmentation label rasters: iSAID and Potsdam RGB palettes, LoveDA index maps
``dior``               DIOR / DIOR-R VOC XML (horizontal and oriented boxes)
``coco``               COCO-json detection (DIORcoco, iSAID)
``dota``               DOTA label files (v1 / v2, original images or patches)
``rsvg``               DIOR-RSVG grounding XML
``multilabel``         multi-label tables and multi-label targets from detection annotations (DIOR, DOTA-v2)
``ucm_aid``            UCM / AID scene folders and lists
``falcon``             Falcon counting conversations (DIOR, DOTA)
``ucm_captions``       UCM captions (Karpathy ``dataset.json``)
=====================  =====================================================================================
"""

from rsam.evaluation.readers.coco import CocoDetectionReader
from rsam.evaluation.readers.dior import DiorXmlReader, parse_dior_xml
from rsam.evaluation.readers.dota import DotaReader, parse_dota_txt
from rsam.evaluation.readers.falcon import CountingReader
from rsam.evaluation.readers.label_rasters import SegmentationReader
from rsam.evaluation.readers.multilabel import MultiLabelFromBoxesReader, MultiLabelTableReader
from rsam.evaluation.readers.refsegrs import PhraseReader
from rsam.evaluation.readers.rrsisd import ReferReader
from rsam.evaluation.readers.rsvg import RsvgReader
from rsam.evaluation.readers.ucm_aid import SceneFolderReader, SceneListReader
from rsam.evaluation.readers.ucm_captions import CaptionReader

__all__ = [
    "CaptionReader",
    "CocoDetectionReader",
    "CountingReader",
    "DiorXmlReader",
    "DotaReader",
    "MultiLabelFromBoxesReader",
    "MultiLabelTableReader",
    "PhraseReader",
    "ReferReader",
    "RsvgReader",
    "SceneFolderReader",
    "SceneListReader",
    "SegmentationReader",
    "parse_dior_xml",
    "parse_dota_txt",
]
