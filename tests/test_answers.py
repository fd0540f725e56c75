"""Tests for catts.answers: extraction never guesses, matching is strict."""

import pytest

from catts.answers import Extraction, answers_match, extract_answer, last_boxed, normalize_text, score

OPTIONS = ["red", "green", "blue"]


# --- last_boxed ---------------------------------------------------------------------------


def test_last_boxed_nested_braces():
    assert last_boxed(r"so \boxed{\frac{1}{2}} done") == r"\frac{1}{2}"


def test_last_boxed_takes_last_and_accepts_space():
    assert last_boxed(r"first \boxed{1}, then \boxed {2}") == "2"


@pytest.mark.parametrize("text", ["no box here", r"\boxed{\frac{1}{2}", r"\boxed{1} and \boxed{2"])
def test_last_boxed_absent_or_unbalanced(text):
    assert last_boxed(text) is None


# --- choice -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content", ["B", "(B)", "B.", "B. green", "B) green", "option B", "b", r"$\text{B}$", "(B) green"]
)
def test_choice_letter_forms(content):
    ex = extract_answer(rf"reasoning... \boxed{{{content}}}", "choice", OPTIONS)
    assert (ex.answer, ex.method) == ("B", "boxed")


def test_choice_option_text_maps_to_letter():
    ex = extract_answer(r"The colour is \boxed{Blue}", "choice", OPTIONS)
    assert (ex.answer, ex.method) == ("C", "boxed_option_text")


def test_choice_option_text_beats_letter_reading():
    # "a dog" must not be read as letter A.
    ex = extract_answer(r"\boxed{a dog}", "choice", ["a cat", "a dog"])
    assert (ex.answer, ex.method) == ("B", "boxed_option_text")


def test_choice_letter_not_in_options():
    ex = extract_answer(r"\boxed{E}", "choice", OPTIONS)
    assert ex.answer is None and ex.method == "none"
    assert "letter E is not an option" in ex.reason


def test_choice_any_letter_without_options():
    assert extract_answer(r"\boxed{E}", "choice").answer == "E"


@pytest.mark.parametrize("content", ["A or B", "A, C", "yellow", "B. blue"])
def test_choice_ambiguous_or_unknown_is_none(content):
    ex = extract_answer(rf"\boxed{{{content}}}", "choice", OPTIONS)
    assert ex.answer is None and ex.method == "none" and ex.reason


def test_choice_empty_box():
    ex = extract_answer(r"\boxed{ }", "choice", OPTIONS)
    assert ex.answer is None and ex.reason == "empty \\boxed{}"


@pytest.mark.parametrize(
    "text", ["Reasoning.\nAnswer: B", "So the answer is (B) green.", "Final answer: **B**."]
)
def test_choice_fallback_patterns(text):
    ex = extract_answer(text, "choice", OPTIONS)
    assert (ex.answer, ex.method) == ("B", "option_letter")


@pytest.mark.parametrize("text", ["The answer is a dog.", "Answer: Both look similar", "I pick B"])
def test_choice_fallback_does_not_guess(text):
    ex = extract_answer(text, "choice", OPTIONS)
    assert ex == Extraction(None, "none", "no \\boxed{} in output")


def test_boxed_wins_over_fallback():
    assert extract_answer(r"Answer: A. Actually \boxed{C}", "choice", OPTIONS).answer == "C"


# --- number -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content, expected",
    [
        ("12", "12"),
        ("12.0", "12"),
        ("-3", "-3"),
        ("1,000", "1000"),
        ("3/4", "0.75"),
        ("50%", "50"),
        (r"50\%", "50"),
        (r"\frac{3}{4}", "0.75"),
        (r"-\dfrac{1}{4}", "-0.25"),
        ("$12$", "12"),
        ("12 apples", "12"),
        ("x = 2.5", "2.5"),
        ("12 or 12.0", "12"),
    ],
)
def test_number_forms(content, expected):
    ex = extract_answer(rf"so \boxed{{{content}}}", "number")
    assert (ex.answer, ex.method) == (expected, "boxed")


@pytest.mark.parametrize("content", ["3 or 4", "1,2", "2^{10}", "five", "1/0"])
def test_number_unreadable_box_is_none(content):
    ex = extract_answer(rf"\boxed{{{content}}}", "number")
    assert ex.answer is None and ex.method == "none" and ex.reason


@pytest.mark.parametrize("text", ["Thus the answer is 12.", "Answer: 12 apples", "The final answer is $3/4$"])
def test_number_fallback_patterns(text):
    ex = extract_answer(text, "number")
    assert ex.method == "number" and ex.answer in ("12", "0.75")


@pytest.mark.parametrize(
    "text", ["The answer might be 5 or 6", "There are 3 cats and 4 dogs, so 7.", "The answer is 5 or 6."]
)
def test_number_unparsed_is_never_guessed(text):
    ex = extract_answer(text, "number")
    assert ex.answer is None and ex.method == "none" and ex.reason


def test_unbalanced_box_reason():
    ex = extract_answer(r"so \boxed{12", "number")
    assert ex.answer is None and "unbalanced" in ex.reason


# --- text ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("  Red Car. ", "red car"),
        (r"$\text{Red   car}$", "red car"),
        ("New\n York", "new york"),
        ("3.5", "3.5"),
    ],
)
def test_normalize_text(raw, expected):
    assert normalize_text(raw) == expected


def test_text_boxed_and_last_line_fallback():
    assert extract_answer(r"\boxed{\text{A Red Car.}}", "text") == Extraction(
        "a red car", "boxed", "", r"\text{A Red Car.}"
    )
    assert extract_answer("Looks red.\nAnswer: Red", "text").answer == "red"
    assert extract_answer("The answer is red, I think. Maybe.", "text").answer is None


def test_unknown_answer_type():
    with pytest.raises(ValueError):
        extract_answer(r"\boxed{1}", "date")


# --- matching -----------------------------------------------------------------------------


def test_none_never_matches():
    for kind in ("choice", "number", "text"):
        assert not answers_match(None, "1", kind)


def test_choice_match():
    assert answers_match("b", "(B)", "choice")
    assert not answers_match("A", "B", "choice")


def test_number_one_never_matches_ten():
    assert not answers_match("1", "10", "number")
    assert not answers_match("10", "1", "number")
    assert not answers_match("1", "10", "number", rel_tol=0.5)
    assert answers_match("10", "10.0", "number")


def test_number_tolerance():
    assert answers_match("0.3333", "1/3", "number", rel_tol=1e-3)
    assert not answers_match("0.3333", "1/3", "number", rel_tol=1e-5)
    assert not answers_match("0.33", "1/3", "number", rel_tol=1e-3)
    assert answers_match("0.75", "3/4", "number")
    assert answers_match("1000", "1,000", "number")


def test_number_with_non_numeric_gold_uses_text():
    assert answers_match("Yes", "yes.", "number")
    assert not answers_match("12", "twelve", "number")


def test_text_match():
    assert answers_match(r"$\text{Red}$", "red.", "text")
    assert not answers_match("red", "reddish", "text")


def test_score():
    ex, ok = score(r"blue sky \boxed{C}", "C", "choice", OPTIONS)
    assert ok and ex.answer == "C"
    ex, ok = score("The answer might be 5 or 6", "5", "number")
    assert not ok and ex.answer is None
