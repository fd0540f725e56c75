"""Answer extraction and matching for model outputs on VQA benchmarks.

Models are prompted to reason step by step and put the final answer inside one ``\\boxed{}``
(a single option letter for multiple choice). Extraction never guesses: when no answer can be
read without ambiguity, the result has ``answer=None``, method "none" and a ``reason``.

- :mod:`.boxes`: the one box scanner (``scan_boxes``), shared with answer probabilities and rewards;
- :mod:`.extract`: ``extract_answer`` and the ``Extraction`` record;
- :mod:`.choice`, :mod:`.numeric`, :mod:`.symbolic`: reading letters, numbers and expressions;
- :mod:`.match`: ``answers_match`` and ``score``.
"""

from catts.answers.boxes import Box, last_boxed, scan_boxes
from catts.answers.extract import METHODS, Extraction, extract_answer
from catts.answers.latex import normalize_text
from catts.answers.match import answers_match, score
from catts.data.sample import ANSWER_TYPES, LETTERS

__all__ = ["ANSWER_TYPES", "LETTERS", "METHODS", "Box", "Extraction", "answers_match", "extract_answer",
           "last_boxed", "normalize_text", "scan_boxes", "score"]
