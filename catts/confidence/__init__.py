"""Confidence of traces and answers (spec section 2)."""

from catts.confidence.trace import token_confidence, trace_confidences, window_means

__all__ = ["token_confidence", "trace_confidences", "window_means"]
