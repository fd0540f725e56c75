"""Training examples for the CA-TTS roles of the embedded tiny models (``catts.tts.prompts`` texts).

The paper's setting is a base model that can take a critique into account and an expert far
stronger than the base. The tiny models learn their roles from the procedural ground truth:

- expert (``tiny-expert``): answers with its rationale (the base prompt), answers directly (the
  likelihood voter's prompt: ``\\boxed{answer}`` alone), critiques a proposed answer (right or
  wrong, half each: "I see: ... The answer X is wrong; it is Y.") and plans (the default order;
  there is no ground truth for a better one, so the tiny planner is a constant: the docs say so).
  Its images are degraded at random (diffusion at any t, the four corruptions) so that it sees
  where the base cannot.
- base (``tiny``): its own answers on clean images as before, plus reflection turns: its first
  answer (right or wrong), a critique that confirms it or corrects it, and the reply "answer again"
  asks for: the same answer after a confirmation, the critique's answer after a correction. The
  image of a reflection example may be degraded (the reply does not depend on it), which teaches
  following a critique under noise, not seeing under noise: the base's own answers stay clean-trained.

Wrong answers are drawn from the same question's answer space (other options, other colours or
shapes, the other of yes/no, another count).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from catts.data import Sample
from catts.data.easyvqa import COLORS as EASY_COLORS, SHAPES as EASY_SHAPES
from catts.data.sample import LETTERS
from catts.models.tiny.train import rationale, target_text
from catts.tts import prompts as P

TASKS = ("answer", "direct", "critic", "planner", "reflection")


@dataclass
class Example:
    """One training example: chat messages (the first user turn holds the image), the reply to learn,
    the sample it comes from and whether its image may be degraded."""

    messages: list[dict]
    target: str
    sample: Sample
    task: str
    degradable: bool


def _user(text: str, image: bool = False) -> dict:
    return {"role": "user", "content": ([{"type": "image"}] if image else []) + [{"type": "text", "text": text}]}


def _turn(role: str, text: str) -> dict:
    return {"role": role, "content": [{"type": "text", "text": text}]}


def box_content(sample: Sample, answer: str) -> str:
    """What the tiny models box for ``answer``: an option's text, anything else as it is."""
    return P.display_answer(answer, sample.options)


def wrong_answer(sample: Sample, rng: random.Random) -> str:
    """Another answer from the same question's answer space."""
    gold = sample.answer
    if sample.answer_type == "choice":
        return rng.choice([L for L in LETTERS[:len(sample.options)] if L != gold])
    if gold in ("yes", "no"):
        return "no" if gold == "yes" else "yes"
    if sample.answer_type == "number":
        return str(rng.choice([n for n in range(0, 5) if str(n) != gold]))
    pool = EASY_COLORS if gold in EASY_COLORS else EASY_SHAPES if gold in EASY_SHAPES else None
    if pool is None:
        raise ValueError(f"sample {sample.id}: no answer space known for {gold!r}")
    return rng.choice([a for a in pool if a != gold])


def answer_example(s: Sample) -> Example:
    return Example([_user(P.base_prompt(s), True)], target_text(s), s, "answer", True)


def direct_example(s: Sample) -> Example:
    target = P.candidate_continuation(box_content(s, s.answer))
    return Example([_user(P.direct_prompt(s), True)], target, s, "direct", True)


def critic_example(s: Sample, proposed: str) -> Example:
    shown, correct = box_content(s, proposed), box_content(s, s.answer)
    target = P.critique_text(rationale(s, explain=True), shown, None if proposed == s.answer else correct)
    return Example([_user(P.critic_prompt(s, proposed), True)], target, s, "critic", True)


def planner_example(s: Sample) -> Example:
    return Example([_user(P.planner_prompt(s), True)], P.plan_text(), s, "planner", True)


def reflection_example(s: Sample, first: str, critique_says: str) -> Example:
    """``first``: the answer of the first turn; ``critique_says``: the answer the critique endorses."""
    first_shown, says_shown = box_content(s, first), box_content(s, critique_says)
    first_text = f"{rationale(s, explain=True) if first == s.answer else 'I see:'} \\boxed{{{first_shown}}}"
    critique = P.critique_text(rationale(s, explain=True), first_shown,
                               None if critique_says == first else says_shown)
    turns = P.reflection_turns(first_text, critique)
    messages = [_user(P.base_prompt(s), True)] + [_turn(role, text) for role, text in turns]
    return Example(messages, P.candidate_continuation(says_shown), s, "reflection", True)


def expert_examples(samples: list[Sample], seed: int = 0) -> list[Example]:
    """Per sample: its answer, its direct answer, two critiques (of the right and of a wrong answer);
    a planner example for one sample in ten."""
    rng = random.Random(seed)
    out = []
    for k, s in enumerate(samples):
        out += [answer_example(s), direct_example(s), critic_example(s, s.answer),
                critic_example(s, wrong_answer(s, rng))]
        if k % 10 == 0:
            out.append(planner_example(s))
    return out


def reflection_examples(samples: list[Sample], seed: int = 0) -> list[Example]:
    """Per sample one reflection: first answer right or wrong (half each); the critique confirms it,
    or names another answer (the gold when the first was wrong, so right and wrong critiques both occur)."""
    rng = random.Random(seed)
    out = []
    for s in samples:
        first = s.answer if rng.random() < 0.5 else wrong_answer(s, rng)
        r = rng.random()
        says = first if r < 0.4 else (s.answer if first != s.answer else wrong_answer(s, rng)) if r < 0.9 \
            else wrong_answer(s, rng)
        out.append(reflection_example(s, first, says))
    return out
