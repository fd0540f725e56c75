"""The base prompt (spec section 6): reason step by step, then one \\boxed{} answer."""

from __future__ import annotations

from catts.data.sample import LETTERS, Sample

OPEN_INSTRUCTION = "Reason step by step, then put the final answer in one \\boxed{}."
CHOICE_INSTRUCTION = "Reason step by step, then put the letter of the correct option in one \\boxed{}."


def build_prompt(sample: Sample) -> str:
    """The user text for a sample: question, lettered options (if any), instruction. A benchmark's sample
    (MathVista, MathVision, MMMU, MMStar) gets its benchmark's own prompt."""
    if sample.metadata.get("benchmark"):
        from catts.data.benchmarks import task_of

        task = task_of(sample)
        if task is not None:
            return task.prompt(sample)
    lines = [sample.question.strip()]
    if sample.options:
        lines += [f"{LETTERS[i]}. {opt}" for i, opt in enumerate(sample.options)]
        lines.append(CHOICE_INSTRUCTION)
    else:
        lines.append(OPEN_INSTRUCTION)
    return "\n".join(lines)
