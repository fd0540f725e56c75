"""Every CA-TTS prompt in one place (spec section 6), and the parsers of the expert's replies.

The roles: the *voter* (generative: a JSON array of probabilities, one per candidate; likelihood:
the expert's teacher-forced probability of each candidate's boxed answer after a direct-answer
prompt), the *critic* (a short critique of the current leading answer), *reflection* (the base
model answers again with the critique in its context, a multi-turn prompt) and the *planner* (the
order of the three modules, a JSON array). The embedded tiny models are trained on exactly these
texts (``catts.models.tiny.roles``), so the prompts here are the contract between them and CA-TTS.

An option is shown by its text ("blue"), not its letter: real models read option texts as well as
letters, and the tiny models can copy a text but not look up a letter (see
``catts.models.tiny.train.target_text``). Answers are read back with ``catts.answers`` (a boxed
option text maps to its letter exactly).
"""

from __future__ import annotations

import json
import re
from typing import Sequence

from catts.data.sample import LETTERS, Sample
from catts.prompts import build_prompt

MODULES = ("self-consistency", "reflection", "self-check")
DEFAULT_PLAN = MODULES  # the spec's fallback order

DIRECT_INSTRUCTION = "Give only the final answer in one \\boxed{}."
CRITIC_INSTRUCTION = "Check the proposed answer against the image and write a short critique."
REFLECT_INSTRUCTION = "Answer again, with the final answer in one \\boxed{}."
VOTER_INSTRUCTION = ("Give the probability that each candidate is correct: reply with only a JSON array of numbers, "
                     "one per candidate, in the order given, summing to 1.")
PLANNER_INSTRUCTION = ("Order the checks self-consistency, reflection and self-check for this question: reply with "
                       "only a JSON array of their names.")


def _question_block(sample: Sample) -> list[str]:
    lines = [sample.question.strip()]
    lines += [f"{LETTERS[i]}. {opt}" for i, opt in enumerate(sample.options)]
    return lines


def display_answer(answer: str, options: Sequence[str] = ()) -> str:
    """How a prompt shows an answer: an option letter by its option's text, anything else as it is."""
    if options and len(answer) == 1 and answer in LETTERS[:len(options)]:
        return options[LETTERS.index(answer)]
    return answer


def base_prompt(sample: Sample) -> str:
    """The base model's prompt (spec: reason step by step, then one boxed answer)."""
    return build_prompt(sample)


def direct_prompt(sample: Sample) -> str:
    """The likelihood voter's prompt: the question, then the boxed answer alone is scored."""
    return "\n".join(_question_block(sample) + [DIRECT_INSTRUCTION])


def candidate_continuation(box_content: str) -> str:
    """The text the likelihood voter scores for a candidate (the backend appends the end token)."""
    return f"\\boxed{{{box_content}}}"


def critic_prompt(sample: Sample, proposed: str) -> str:
    """The critic's prompt: question, the proposed (leading) answer, the instruction."""
    shown = display_answer(proposed, sample.options)
    return "\n".join(_question_block(sample) + [f"Proposed answer: {shown}", CRITIC_INSTRUCTION])


def critique_text(seen: str, proposed_shown: str, correct_shown: str | None) -> str:
    """A critique in the form the tiny expert is trained to write (``correct_shown`` None: it is right)."""
    if correct_shown is None or correct_shown == proposed_shown:
        return f"{seen} The answer {proposed_shown} is right."
    return f"{seen} The answer {proposed_shown} is wrong; it is {correct_shown}."


def reflection_turns(first_answer: str, critique: str) -> tuple[tuple[str, str], ...]:
    """The turns after the base prompt: the model's own answer, then the critique and "answer again"."""
    return (("assistant", first_answer), ("user", f"A reviewer's critique: {critique.strip()}\n{REFLECT_INSTRUCTION}"))


def voter_prompt(sample: Sample, candidates: Sequence[str]) -> str:
    """The generative voter's prompt: question, the distinct candidates in order, the JSON instruction."""
    shown = [f"{k + 1}. {display_answer(c, sample.options)}" for k, c in enumerate(candidates)]
    return "\n".join(_question_block(sample) + ["Candidate answers:"] + shown + [VOTER_INSTRUCTION])


def planner_prompt(sample: Sample) -> str:
    return "\n".join(_question_block(sample) + [PLANNER_INSTRUCTION])


def plan_text(order: Sequence[str] = DEFAULT_PLAN) -> str:
    return json.dumps(list(order))


_ARRAY = re.compile(r"\[[^\[\]]*\]")


def _last_array(reply: str):
    for match in reversed(_ARRAY.findall(reply)):
        try:
            return json.loads(match)
        except json.JSONDecodeError:
            continue
    return None


def parse_probabilities(reply: str, n: int) -> list[float] | None:
    """The voter's probabilities: the last JSON array in ``reply`` with ``n`` finite numbers >= 0 and a
    positive sum, renormalised to 1. Anything else is None (the caller retries, then records a failure)."""
    values = _last_array(reply)
    if not isinstance(values, list) or len(values) != n:
        return None
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 and v == v and v != float("inf")
               for v in values):
        return None
    total = float(sum(values))
    if not 0 < total < float("inf"):
        return None
    return [float(v) / total for v in values]


def parse_plan(reply: str) -> list[str] | None:
    """The planner's order: the last JSON array of the three module names, each once. Else None."""
    values = _last_array(reply)
    if not isinstance(values, list) or sorted(map(str, values)) != sorted(MODULES) or len(values) != len(MODULES):
        return None
    return [str(v) for v in values]


def critique_verdict(critique: str) -> str | None:
    """What a critique in the trained form says: "right", "wrong" or None (free text is not mined)."""
    if re.search(r"\bis wrong\b", critique):
        return "wrong"
    if re.search(r"\bis right\b", critique):
        return "right"
    return None
