"""The dynamo exporter's translation of our custom op into the `efficientvis::MultiLevelRoIAlign` node.

Kept in its own module, imported only when exporting, because onnxscript's script
converter reads this source: names must be module globals and annotations must be real
objects (hence no ``from __future__ import annotations`` here).

Script mode, because onnxscript's traced mode looks up an OpSchema, which our domain has
not got. The FLOAT annotations are load-bearing on torch 2.13 (docs/design.md, "Tool facts"): without
them the exporter fails when it inlines the translation. The plugin_namespace/plugin_version
literals must equal `efficientvis_trt.plugins.spec` (the exporter test pins them).
"""

import onnxscript
from onnxscript import FLOAT
from onnxscript import opset18 as op

from efficientvis_trt.plugins.spec import DOMAIN

evis = onnxscript.values.Opset(DOMAIN, 1)


@onnxscript.script(evis, default_opset=op)
def multi_level_roi_align(
    p2: FLOAT,
    p3: FLOAT,
    p4: FLOAT,
    p5: FLOAT,
    rois: FLOAT,
    output_size: int,
    sampling_ratio: int,
    canonical_box_size: float,
    canonical_level: int,
    aligned: int,
    min_level: int,
) -> FLOAT:
    return evis.MultiLevelRoIAlign(
        p2,
        p3,
        p4,
        p5,
        rois,
        output_size=output_size,
        sampling_ratio=sampling_ratio,
        canonical_box_size=canonical_box_size,
        canonical_level=canonical_level,
        aligned=aligned,
        min_level=min_level,
        plugin_namespace="efficientvis",
        plugin_version="1",
    )
