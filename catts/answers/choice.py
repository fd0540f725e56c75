"""Reading an option letter from a box's content.

The prompt asks for a letter, so a letter form is a letter, even when an option's text is also a
letter (point labels such as options ``A, C, D, B``):

- letter forms: ``B``, ``b``, ``(B)``, ``B.``, ``B)``, ``B:``, ``option B``, ``choice (B)``, and a
  letter followed by text: ``B. blue``, ``B: blue``, ``B) blue``, ``(B) blue``, ``B (blue)``; a letter
  and text with only a space between (``B blue``) only when the text is that letter's own option
  (otherwise "a dog" would read as A);
- a letter whose text names a *different* option contradicts itself: unparsed;
- only content that is no letter form is matched against the option texts (method
  ``boxed_option_text``: the embedded tiny models box the option's text).
"""

from __future__ import annotations

import re
from typing import Sequence

from catts.answers.latex import normalize_text, strip_latex
from catts.data.sample import LETTERS

_PREFIX = r"^(?:(?:option|choice)\s*)?"
# (B), (B) text, (B). text
_PAREN = re.compile(_PREFIX + r"\(\s*([A-Za-z])\s*\)(?:\s*[.:]?\s*(.*))?$", re.I | re.S)
# B, B. text, B: text, B) text, B (text)
_BARE = re.compile(_PREFIX + r"([A-Za-z])(?:\s*[.:)]\s*(.*)|\s*\((.*)\)\s*\.?)?$", re.I | re.S)
# B text (a space only): a letter only when the text is its own option
_SPACED = re.compile(_PREFIX + r"([A-Za-z])\s+(.+)$", re.I | re.S)


def option_index(text: str, options: Sequence[str]) -> list[int]:
    """Indices of the options whose normalised text equals ``text``'s."""
    norm = normalize_text(text)
    return [i for i, opt in enumerate(options) if normalize_text(opt) == norm] if norm else []


def letter_form(content: str, options: Sequence[str]) -> tuple[str, str] | None:
    """(letter, text after it) when ``content`` is a letter form, else None."""
    c = strip_latex(content)
    m = _PAREN.match(c)
    if m:
        return m.group(1).upper(), m.group(2) or ""
    m = _BARE.match(c)
    if m:
        return m.group(1).upper(), m.group(2) or m.group(3) or ""
    m = _SPACED.match(c)
    if m and options:
        letter = m.group(1).upper()
        if any(LETTERS[i] == letter for i in option_index(m.group(2), options)):
            return letter, m.group(2)
    return None


def read_choice(content: str, options: Sequence[str]) -> tuple[str | None, str, str]:
    """(letter, method, reason) read from a box's content by the module rules."""
    form = letter_form(content, options)
    if form is not None:
        letter, rest = form
        if options and letter not in LETTERS[: len(options)]:
            return None, "none", f"letter {letter} is not an option"
        named = [LETTERS[i] for i in option_index(rest, options)]
        if named and letter not in named:
            return None, "none", f"letter {letter} contradicts option text {normalize_text(rest)!r}"
        return letter, "boxed", ""
    hits = option_index(content, options)
    if len(hits) == 1:
        return LETTERS[hits[0]], "boxed_option_text", ""
    if len(hits) > 1:
        return None, "none", f"{normalize_text(content)!r} is the text of several options"
    if len(set(re.findall(r"\b[A-Z]\b", strip_latex(content)))) > 1:
        return None, "none", f"ambiguous choice in \\boxed{{{content}}}"
    return None, "none", f"no option letter in \\boxed{{{content}}}"
