"""catts: make multimodal LLMs know when they do not know.

Data flows through the subpackages in this order:
data -> perception (degradations) -> models (backends) -> confidence -> calibration -> eval / probe / tts / train.
"""

__version__ = "0.1.0"
