"""The ONNX tensor names of a bundle: what training/export.py writes and shared/runtime.py feeds and reads.

The backbone takes uint8 RGB ``image`` (N, H, W, 3) and gives ``features`` (and, with its
ImageNet top, ``imagenet_probs``); the head takes ``features`` and gives ``probabilities``.
"""

from __future__ import annotations

BACKBONE_INPUT = "image"
FEATURES = "features"
IMAGENET_PROBS = "imagenet_probs"
HEAD_INPUT = FEATURES
HEAD_PROBABILITIES = "probabilities"
