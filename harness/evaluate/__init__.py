"""Evaluation: the paper's test protocols and metrics (``inference``), scoring saved predictions
(``predictions``), re-evaluating finished cells (``cells``); ``python -m harness.evaluate`` is
``command``.
"""
from __future__ import annotations

from harness.evaluate.cells import protocol_changes, protocol_tag
from harness.evaluate.inference import (
    aug_probabilities,
    evaluate,
    predict,
    protocol_kwargs,
    slide_inference,
    whole_inference,
    window_starts,
)
from harness.evaluate.predictions import PredictionError, prediction_paths

__all__ = ["PredictionError", "aug_probabilities", "evaluate", "predict", "prediction_paths", "protocol_changes", "protocol_kwargs", "protocol_tag", "slide_inference", "whole_inference", "window_starts"]
