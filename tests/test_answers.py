"""Tests for catts.answers: extraction never guesses, matching is strict."""

import pytest

from catts.answers import Box, Extraction, answers_match, extract_answer, last_boxed, normalize_text, scan_boxes, score

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


@pytest.mark.parametrize("content", ["3 or 4", "3 and 5", "1,2", "five", "1/0", "12 (see above)"])
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


def test_unclosed_box_reason():
    ex = extract_answer(r"so \boxed{12", "number")
    assert ex == Extraction(None, "none", "unclosed \\boxed{", "12", None, 1)


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
        "a red car", "boxed", "", r"\text{A Red Car.}", (7, 24), 1
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


# --- the one box scanner --------------------------------------------------------------------


def test_scan_boxes_spans_and_content():
    text = "a \\boxed{x} b \\fbox{\\frac{1}{2}} c \\boxed\n {\\{1\\}}"
    boxes = scan_boxes(text)
    assert [b.content for b in boxes] == ["x", "\\frac{1}{2}", "\\{1\\}"]  # escaped braces do not count
    assert all(b.closed for b in boxes)
    first = boxes[0]
    assert text[slice(*first.span)] == "\\boxed{x}" and text[slice(*first.content_span)] == "x"
    assert text[slice(*boxes[2].span)] == "\\boxed\n {\\{1\\}}"


def test_scan_boxes_unclosed_runs_to_end_and_nested_boxes_are_content():
    assert scan_boxes("\\boxed{A} then \\boxed{B") == [
        Box((0, 9), (7, 8), "A", True), Box((15, 23), (22, 23), "B", False)]
    (outer,) = scan_boxes("\\boxed{B ... \\boxed{A}")  # the first box never closes: it swallows the second
    assert not outer.closed and outer.content == "B ... \\boxed{A}"
    (nested,) = scan_boxes("\\boxed{\\boxed{C}}")
    assert nested.closed and nested.content == "\\boxed{C}"
    assert scan_boxes("\\boxed A and \\boxedfoo{1}") == []


@pytest.mark.parametrize("text, n", [("Answer: B", 0), ("\\boxed{B}", 1), ("\\boxed{A}, no: \\boxed{B}", 2),
                                     ("\\boxed{A} \\boxed{B", 2)])
def test_n_boxes_counted(text, n):
    assert extract_answer(text, "choice", OPTIONS).n_boxes == n


def test_box_with_newline_before_brace():
    text = "so \\boxed\n{A}"
    ex = extract_answer(text, "choice", OPTIONS)
    assert (ex.answer, ex.method, ex.span) == ("A", "boxed", (11, 12)) and text[11] == "A"


def test_last_box_unclosed_is_unparsed_even_after_a_closed_box():
    ex = extract_answer("\\boxed{A} ... \\boxed{B", "choice", OPTIONS)
    assert ex.answer is None and ex.reason == "unclosed \\boxed{" and ex.span is None


def test_last_closed_box_wins():
    ex = extract_answer("\\boxed{A}? No: \\boxed{ C }.", "choice", OPTIONS)
    assert (ex.answer, ex.n_boxes) == ("C", 2)
    assert "\\boxed{A}? No: \\boxed{ C }."[slice(*ex.span)] == "C"  # spaces around the content trimmed


# --- spans of unboxed answers ---------------------------------------------------------------


@pytest.mark.parametrize("text, kind, answer, read", [
    ("The answer is C.", "choice", "C", "C"),
    ("So the answer is (B) green.", "choice", "B", "B"),
    ("Thus the answer is 12 apples.", "number", "12", "12"),
    ("The final answer is $3/4$", "number", "0.75", "3/4"),
    ("Looks red.\nAnswer: Red ", "text", "red", "Red"),
])
def test_unboxed_answer_span(text, kind, answer, read):
    ex = extract_answer(text, kind, OPTIONS)
    assert ex.answer == answer and text[slice(*ex.span)] == read


# --- a formula is never cut down to one of its numbers ----------------------------------------


@pytest.mark.parametrize("content, old_reading", [
    (r"\sqrt{2}", "2"), (r"2\pi", "2"), ("x^2", "2"), (r"\log 8", "8"), ("3!", "3"), ("1e5", "1"),
    ("2^{10}", "2"), ("2x", "2"), (r"\frac{\sqrt{2}}{2}", "2"),
])
def test_expression_is_not_its_first_number(content, old_reading):
    ex, ok = score(rf"\boxed{{{content}}}", old_reading, "number")
    assert not ok and ex.answer != old_reading


@pytest.mark.parametrize("content, gold, method", [
    (r"\sqrt{2}", "1.4142", "expression"),   # a closed form is compared by its value, within tolerance
    (r"2\pi", r"2\pi", "expression"),
    (r"2\pi", "6.28319", "expression"),
    ("3!", "6", "expression"),
    ("2^{10}", "1024", "expression"),
    (r"\frac{\sqrt{3}}{2}", "0.8660254", "expression"),
    (r"\frac{\pi}{4}", "0.785398", "expression"),
    (r"2\sqrt{3}\text{ cm}", "3.4641", "expression"),
    (r"\pi r^2", r"r^2 \pi", "expression"),  # symbols: math-verify's symbolic equality
    ("x^2", "x^2", "expression"),
    ("1e5", "100000", "boxed"),               # scientific notation is a plain number
    (r"1.5 \times 10^{3}", "1500", "boxed"),
])
def test_expression_matches_when_mathematically_equal(content, gold, method):
    ex, ok = score(rf"\boxed{{{content}}}", gold, "number")
    assert ok and ex.method == method


def test_expression_kept_whole():
    assert extract_answer(r"\boxed{\sqrt{2}}", "number") == Extraction(
        r"\sqrt{2}", "expression", "", r"\sqrt{2}", (7, 15), 1)
    assert extract_answer(r"\boxed{x^2}", "number").answer == "x^2"
    assert not answers_match("x^2", "2", "number") and not answers_match("x^2", "4", "number")


def test_unreadable_expression_is_unparsed():
    ex = extract_answer(r"\boxed{\frac{1}{}+}", "number")
    assert ex.answer is None and ex.method == "none" and ex.reason


@pytest.mark.parametrize("content", [r"10^{10^{10}}!", r"2^{2^{2^{30}}}", "x^{10^{10}}", "1000000!"])
def test_power_towers_are_never_computed(content):
    # kept as the expression, matched against nothing, and quickly (no exact big-integer arithmetic)
    ex, ok = score(rf"\boxed{{{content}}}", "3", "number")
    assert ex.method == "expression" and not ok


def test_plain_numbers_do_not_load_math_verify():
    import subprocess
    import sys

    code = ("import sys; from catts.answers import score; "
            "assert score(r'\\boxed{1\\,000 cm^2}', '1000', 'number')[1]; "
            "assert 'math_verify' not in sys.modules and 'sympy' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_symbolic_matching_works_in_worker_threads():
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda g: score(r"\boxed{\sqrt{8}}", g, "number")[1], ["2.828427", "8"]))
    assert results == [True, False]


# --- units, spacing and separators --------------------------------------------------------------


@pytest.mark.parametrize("content, gold", [
    ("12 cm^2", "12"), (r"3\text{ cm}^{2}", "3"), (r"1\,000", "1000"), ("1{,}000", "1000"),
    (r"12\,\text{cm}", "12"), (r"12~\mathrm{cm}^2", "12"), (r"12\ \text{m}", "12"), ("12cm", "12"),
    ("5 m/s", "5"), (r"45^\circ", "45"), (r"45^{\circ}", "45"), ("45°", "45"), (r"30\%", "30"),
    (r"\$12", "12"), ("12 square units", "12"), (r"x = 2.5\text{ m}", "2.5"), (r"1\!000", "1000"),
])
def test_number_with_units_and_spacing(content, gold):
    ex, ok = score(rf"\boxed{{{content}}}", gold, "number")
    assert ok and ex.method == "boxed", ex


def test_several_numbers_with_units_stay_unparsed():
    for content in ("3 cm or 4 cm", "3 and 5", r"3\text{ or }4"):
        assert extract_answer(rf"\boxed{{{content}}}", "number").answer is None


# --- a letter is a letter -----------------------------------------------------------------------


def test_letter_beats_option_text_for_point_labels():
    ex = extract_answer(r"\boxed{B}", "choice", ["A", "C", "D", "B"])
    assert (ex.answer, ex.method) == ("B", "boxed")  # not D, whose text is "B"
    ex = extract_answer(r"\boxed{(D) B}", "choice", ["A", "C", "D", "B"])
    assert ex.answer == "D"  # a letter with its own option text


@pytest.mark.parametrize("content", ["B (blue)", "B. blue", "B: blue", "B) blue", "(B) blue", "B blue",
                                     "option B", r"\textbf{B}"])
def test_letter_with_its_option_text(content):
    ex = extract_answer(rf"\boxed{{{content}}}", "choice", ["red", "blue", "green"])
    assert (ex.answer, ex.method) == ("B", "boxed")


@pytest.mark.parametrize("content", ["B (green)", "B: green", "C. red"])
def test_letter_naming_another_option_contradicts(content):
    ex = extract_answer(rf"\boxed{{{content}}}", "choice", ["red", "blue", "green"])
    assert ex.answer is None and "contradicts" in ex.reason


def test_option_text_only_when_not_a_letter_form():
    ex = extract_answer(r"\boxed{green}", "choice", ["red", "blue", "green"])
    assert (ex.answer, ex.method) == ("C", "boxed_option_text")
    ex = extract_answer(r"\boxed{a}", "choice", ["b", "a"])  # a bare letter is a letter
    assert (ex.answer, ex.method) == ("A", "boxed")
