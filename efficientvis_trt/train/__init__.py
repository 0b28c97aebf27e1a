"""Training EfficientVIS: tracklet Hungarian matching, losses, the trainer and `evis train`.

Heavy modules (torch, the data reader, the evaluator) are imported by the submodules, so
`import efficientvis_trt.train` stays cheap.
"""

from __future__ import annotations

__all__ = ["train", "TrackletMatcher", "SetCriterion"]


def __getattr__(name: str):
    if name == "train":
        from efficientvis_trt.train.trainer import train

        return train
    if name == "TrackletMatcher":
        from efficientvis_trt.train.matcher import TrackletMatcher

        return TrackletMatcher
    if name == "SetCriterion":
        from efficientvis_trt.train.losses import SetCriterion

        return SetCriterion
    raise AttributeError(name)
