"""catts.data.benchmarks: MathVista, MathVision, MMMU and MMStar from their published layouts (HF parquet,
VLMEvalKit TSV, the repos' JSON / JSONL), their answer rules, sub-splits and malformed rows.

Fixtures (tests/fixtures/benchmarks, see its README): real rows of MathVista, MathVision and MMMU (most
images downscaled), synthetic MMStar rows in its schema."""

from __future__ import annotations

import base64
import csv
import io
import json
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from catts.answers import Extraction
from catts.data import DataError, load_data
from catts.data.benchmarks import (BENCHMARKS, MMMU, MathVista, accuracy_by, get_task, load_benchmark,
                                   task_of)

FIX = Path(__file__).parent / "fixtures" / "benchmarks"


# ---------------------------------------------------------------- helpers


def by_id(samples):
    return {s.id: s for s in samples}


def read_tsv(path: Path) -> tuple[list[str], list[list[str]]]:
    csv.field_size_limit(sys.maxsize)
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    return rows[0], rows[1:]


def write_tsv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)
    return path


def tsv_line(path: Path, index: str) -> int:
    """The 1-based line on which the row with this ``index`` starts."""
    text = path.read_text(encoding="utf-8")
    for pos in range(len(text)):
        if (pos == 0 or text[pos - 1] == "\n") and text.startswith(index + "\t", pos):
            return text.count("\n", 0, pos) + 1
    raise AssertionError(index)


def edit_parquet(src: Path, dst: Path, **changes) -> Path:
    """A copy of ``src`` (schema and metadata kept) with ``{row_number: {column: value}}`` applied."""
    table = pq.read_table(src)
    rows = table.to_pylist()
    for key, cells in changes.items():
        rows[int(key.removeprefix("row"))].update(cells)
    dst.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), dst)
    return dst


def png_b64(color=(200, 10, 10)) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


@pytest.fixture(scope="module")
def mathvista():
    return get_task("mathvista")


@pytest.fixture(scope="module")
def vista_hf(mathvista):
    return by_id(mathvista.load(FIX / "mathvista" / "data"))


@pytest.fixture(scope="module")
def vista_json(mathvista):
    return by_id(mathvista.load(FIX / "mathvista" / "testmini.json"))


@pytest.fixture(scope="module")
def mmmu_hf():
    return by_id(get_task("mmmu").load(FIX / "mmmu"))


@pytest.fixture(scope="module")
def mmstar_hf():
    return get_task("mmstar").load(FIX / "mmstar" / "mmstar.parquet")


# ---------------------------------------------------------------- MathVista


def test_mathvista_repo_json(vista_json, mathvista):
    assert list(vista_json) == ["1", "2", "3", "106", "225", "540", "824", "852"]
    s = vista_json["3"]  # Chinese multiple choice, gold given as the choice text
    assert (s.answer_type, s.answer, s.metadata["answer_text"]) == ("choice", "C", "145°")
    assert s.options == ["135°", "140°", "145°", "150°"]
    assert vista_json["540"].answer == "A"
    assert (vista_json["1"].answer_type, vista_json["1"].metadata["precision"]) == ("number", 1)
    assert vista_json["2"].metadata["unit"] == "g" and vista_json["2"].answer == "1000"
    assert vista_json["225"].answer_type == "text" and vista_json["225"].metadata["answer_type"] == "list"
    assert "\r\n" in vista_json["1"].question and "\r" not in mathvista.prompt(vista_json["1"])
    assert vista_json["106"].images == [str(FIX / "mathvista" / "images" / "106.jpg")]  # images.zip beside it
    assert vista_json["106"].metadata["grade"] == "not applicable"


def test_mathvista_hf_parquet(vista_hf, mathvista):
    assert list(vista_hf) == ["106", "225", "540", "824", "852"]
    one_file = mathvista.load(FIX / "mathvista" / "data" / "testmini-00000-of-00001.parquet")
    assert by_id(one_file).keys() == vista_hf.keys()
    s = vista_hf["824"]
    assert s.metadata["precision"] == 2 and isinstance(s.metadata["precision"], int)  # 2.0 in the parquet
    assert s.metadata["query"].startswith("Hint: Please answer the question requiring a floating-point number")
    assert vista_hf["106"].metadata["grade"] == "daily life"  # the HF row differs from the JSON: kept as is
    assert vista_hf["540"].answer == "A" and vista_hf["540"].options == ["3/11", "8/11", "6/11", "3/5"]
    for s in vista_hf.values():
        (im,) = s.load_images()
        assert im.size[0] > 0 and s.metadata["benchmark"] == "mathvista" and s.metadata["layout"] == "hf"
    assert vista_hf["540"].load_images()[0].size == (102, 103)  # the real image, byte-exact


def test_mathvista_tsv(vista_hf, mathvista):
    tsv = by_id(mathvista.load(FIX / "mathvista" / "MathVista_MINI.tsv"))
    assert tsv.keys() == vista_hf.keys()
    for pid, s in tsv.items():
        h = vista_hf[pid]
        assert (s.question, s.answer, s.answer_type, s.options) == (h.question, h.answer, h.answer_type, h.options)
        assert s.metadata["answer_type"] == h.metadata["answer_type"]  # float(2): precision read from the hint
        assert np.array_equal(np.asarray(s.load_images()[0]), np.asarray(h.load_images()[0]))
    assert tsv["540"].metadata["query"].endswith("Choices:\n(A) 3/11\n(B) 8/11\n(C) 6/11\n(D) 3/5")
    assert tsv["824"].metadata["precision"] == 2 and tsv["540"].metadata["task"] == "math word problem"


def test_mathvista_prompt(vista_json, mathvista):
    p = mathvista.prompt(vista_json["2"])
    assert "what is the total volume of the measuring cup? (Unit: g)" in p and "Answer with an integer." in p
    assert p.endswith("\\boxed{}.")
    assert "Answer with a number with 2 decimal places." in mathvista.prompt(vista_json["824"])
    assert "Answer with a number with 1 decimal place." in mathvista.prompt(vista_json["1"])
    assert mathvista.prompt(vista_json["824"]).count("(Unit: $)") == 1  # already in the question
    assert "Python list" in mathvista.prompt(vista_json["225"])
    p = mathvista.prompt(vista_json["540"])
    assert "A. 3/11\nB. 8/11\nC. 6/11\nD. 3/5" in p and "letter of the correct option" in p


@pytest.mark.parametrize("pid,pred,ok", [
    ("824", "0.13", True), ("824", "0.131", True), ("824", "0.134", True), ("824", "0.125", True),  # half-up
    ("824", "0.135", False), ("824", "0.14", False), ("824", "0.1", False), ("824", "$0.13", True),
    ("824", "13/100", True),
    ("1", "1.2", True), ("1", "1.24", True), ("1", "1.15", True), ("1", "1.25", False), ("1", "1.2 cm", True),
    ("852", "40", True), ("852", "40.0", True), ("852", "40.4", False), ("852", "\\frac{80}{2}", True),
    ("852", "41", False), ("852", "forty", False), ("2", "1,000", True), ("2", "1000 g", True),
    ("106", "0", True), ("106", "-0", True),
    ("225", "[0, 2, 0, 2, 1, 7, 1, 2, 0, 3, 0, 6]", True), ("225", "[0,2,0,2,1,7,1,2,0,3,0,6]", True),
    ("225", "0, 2, 0, 2, 1, 7, 1, 2, 0, 3, 0, 6", True), ("225", "[0, 2, 0, 2, 1, 7, 1, 2, 0, 3, 0]", False),
    ("225", "[0, 2, 0, 2, 1, 7, 1, 2, 0, 3, 0, 7]", False),
    ("540", "A", True), ("540", "(a)", True), ("540", "B", False), ("3", "C", True), ("3", "145°", False),
])
def test_mathvista_match(vista_json, mathvista, pid, pred, ok):
    assert mathvista.match(pred, vista_json[pid]) is ok


def test_mathvista_list_precision(mathvista, vista_json):
    row = {"pid": "9001", "question": "q", "image": "x.png", "answer": "[1.25, 3.5]", "question_type": "free_form",
           "answer_type": "list", "precision": 1}
    s = mathvista.from_repo(row, FIX)
    assert mathvista.match("[1.3, 3.5]", s) and not mathvista.match("[1.2, 3.5]", s)


def test_mathvista_score(vista_json, mathvista):
    ext, ok = mathvista.score("The two candies cost 0.06 + 0.07, so \\boxed{0.13}.", vista_json["824"])
    assert ok and ext.answer == "0.13"
    ext, ok = mathvista.score("Blue is 3 of 11 parts: \\boxed{3/11}", vista_json["540"])  # the option's text
    assert ok and ext.answer == "A" and ext.method == "boxed_option_text"
    assert mathvista.score("\\boxed{[0, 2, 0, 2, 1, 7, 1, 2, 0, 3, 0, 6]}", vista_json["225"])[1]
    assert not mathvista.score("no box here", vista_json["852"])[1]
    assert mathvista.match(Extraction("40", "boxed"), vista_json["852"])
    assert not mathvista.match(None, vista_json["852"]) and not mathvista.match(Extraction(None, "none"),
                                                                               vista_json["852"])


def test_mathvista_subsplits(vista_json, mathvista):
    assert mathvista.subsplits(vista_json["824"]) == {
        "question_type": "free_form", "answer_type": "float(2)", "task": "math word problem", "context": "table",
        "source": "TabMWP", "grade": "elementary school"}
    assert mathvista.subsplit(vista_json["540"]) == "multi_choice" == vista_json["540"].question_type
    kinds = {pid: mathvista.subsplit(s, "answer_type") for pid, s in vista_json.items()}
    assert kinds == {"1": "float(1)", "2": "integer", "3": "text", "106": "integer", "225": "list", "540": "text",
                     "824": "float(2)", "852": "integer"}
    with pytest.raises(ValueError, match="no sub-split axis"):
        mathvista.subsplit(vista_json["1"], "subject")
    samples = list(vista_json.values())
    table = accuracy_by(mathvista, samples, {"540": True, "3": False, "852": True}, "question_type")
    assert table == {"free_form": {"n": 6, "correct": 1, "accuracy": 1 / 6},
                     "multi_choice": {"n": 2, "correct": 1, "accuracy": 0.5}}
    assert accuracy_by(mathvista, samples, [True] * 8)["multi_choice"]["accuracy"] == 1.0
    with pytest.raises(ValueError):
        accuracy_by(mathvista, samples, [True])


def test_mathvista_json_errors(tmp_path, mathvista):
    text = (FIX / "mathvista" / "testmini.json").read_text()
    data = json.loads(text)
    data["540"]["answer"] = "3/12"            # not one of the choices
    data["852"]["answer_type"] = "fraction"   # unknown
    data["106"]["precision"] = "two"          # not a number
    data["1"]["answer"] = "about one"         # a float that is no number
    path = tmp_path / "testmini.json"
    path.write_text(json.dumps(data, indent=4))
    errors = []
    samples = mathvista.load(path, errors)
    assert [s.id for s in samples] == ["2", "3", "225", "824"]
    lines = path.read_text().splitlines()
    for e in errors:
        assert e["source"] == str(path) and lines[e["line"] - 1].strip() == f'"{e["id"]}": {{', e
    msgs = {e["id"]: e["error"] for e in errors}
    assert "not the text of exactly one of the choices" in msgs["540"] and "'fraction'" in msgs["852"]
    assert "precision 'two'" in msgs["106"] and "not a number" in msgs["1"]
    with pytest.raises(DataError, match=r"testmini.json:\d+ id='1'"):
        mathvista.load(path)


def test_mathvista_parquet_errors(tmp_path, mathvista):
    src = FIX / "mathvista" / "data" / "testmini-00000-of-00001.parquet"
    bad = edit_parquet(src, tmp_path / "testmini-00000-of-00001.parquet", row1={"question_type": None},
                       row3={"decoded_image": None, "image": None}, row4={"pid": "106"})
    errors = []
    samples = mathvista.load(bad, errors)
    assert [s.id for s in samples] == ["106", "540"]
    assert [(e["line"], e["id"]) for e in errors] == [(2, "225"), (4, "824"), (5, "106")]
    assert "question_type None" in errors[0]["error"] and "no image" in errors[1]["error"]
    assert "duplicate id (first on line 1)" in errors[2]["error"]
    (tmp_path / "junk.parquet").write_bytes(b"not parquet")
    with pytest.raises(DataError, match="not a readable parquet file"):
        mathvista.load(tmp_path / "junk.parquet")
    pq.write_table(pq.read_table(src).drop_columns(["answer_type"]), tmp_path / "cut.parquet")
    with pytest.raises(DataError, match="lacks the column"):
        mathvista.load(tmp_path / "cut.parquet", [])


def test_mathvista_empty_folder(tmp_path, mathvista):
    (tmp_path / "d").mkdir()
    with pytest.raises(DataError, match=r"no testmini-\*\.parquet file under"):
        mathvista.load(tmp_path / "d")


def test_mathvista_json_array_and_tsv_variants(tmp_path, mathvista):
    entries = list(json.loads((FIX / "mathvista" / "testmini.json").read_text()).values())[:3]
    path = tmp_path / "rows.json"
    path.write_text(json.dumps([entries[0], 7, entries[2]], indent=2))
    errors = []
    assert [s.id for s in mathvista.load(path, errors)] == ["1", "3"]
    assert [(e["line"], e["id"]) for e in errors] == [(path.read_text().splitlines().index("  7,") + 1, None)]
    assert "not an object" in errors[0]["error"]
    # VLMEvalKit variants: no answer_option (the letter comes from the choice text), "None" for no choices,
    # a bare question instead of the query (the precision then comes from the gold's decimals)
    header, rows = read_tsv(FIX / "mathvista" / "MathVista_MINI.tsv")
    col = {h: i for i, h in enumerate(header)}
    keep = [h for h in header if h != "answer_option"]
    rows = [[r[col[h]] for h in keep] for r in rows]
    rows[0][keep.index("choices")] = "None"
    rows[3][keep.index("question")] = "How much money does Luca need? (Unit: $)"
    got = by_id(mathvista.load(write_tsv(tmp_path / "MathVista_MINI.tsv", keep, rows)))
    assert got["540"].answer == "A" and got["106"].options == []
    assert got["824"].metadata["precision"] == 2 and "query" not in got["824"].metadata
    assert mathvista.prompt(got["824"]).startswith("How much money does Luca need? (Unit: $)\n")


def test_tsv_undecodable_row_and_hf_image_path(tmp_path, mathvista):
    header, rows = read_tsv(FIX / "mmstar" / "MMStar.tsv")
    path = write_tsv(tmp_path / "MMStar.tsv", header, rows)
    data = path.read_bytes().replace(b"How many circles", b"How many \xff circles")
    path.write_bytes(data)
    errors = []
    assert [s.id for s in get_task("mmstar").load(path, errors)] == ["0", "2", "3", "4", "5"]
    assert errors[0]["id"] == "1" and "not valid UTF-8 (column question)" in errors[0]["error"]
    # an HF image cell with a path and no bytes: the path, relative to the parquet file's folder
    src = FIX / "mathvista" / "data" / "testmini-00000-of-00001.parquet"
    bad = edit_parquet(src, tmp_path / "p" / "t.parquet", row0={"decoded_image": {"bytes": None, "path": "im/106.png"}})
    (s, *_) = mathvista.load(bad)
    assert s.images == [str(tmp_path / "p" / "im" / "106.png")]


# ---------------------------------------------------------------- MathVision


def test_mathvision_repo_jsonl():
    task = get_task("mathvision")
    got = by_id(task.load(FIX / "mathvision" / "data" / "testmini.jsonl"))
    assert list(got) == ["4", "52", "27", "173", "203", "250", "1512", "1709"]
    assert got["4"].images == [str(FIX / "mathvision" / "images" / "4.jpg")]  # images/ beside data/
    for s in got.values():
        assert s.load_images()[0].mode == "RGB"
    assert (got["52"].options, got["52"].answer) == (["A", "B", "C", "D", "E"], "C")
    assert got["173"].answer == "E" and got["173"].options[0] == "$\\frac{6-\\sqrt{2}}{2}$"
    assert [got[i].answer_type for i in ("4", "203", "250", "1709")] == ["number"] * 4
    assert got["1709"].metadata["solution"].startswith("Let the unknown numbers")
    assert task.subsplits(got["1512"]) == {"format": "multiple_choice", "subject": "metric geometry - angle",
                                           "level": "5"}
    assert task.subsplit(got["4"]) == "free_form"


def test_mathvision_hf_and_tsv():
    task = get_task("mathvision")
    repo = by_id(task.load(FIX / "mathvision" / "data" / "testmini.jsonl"))
    hf = by_id(task.load(FIX / "mathvision"))  # the folder: finds testmini-00000-of-00001.parquet
    tsv = by_id(task.load(FIX / "mathvision" / "MathVision_MINI.tsv"))
    assert list(hf) == list(repo) and list(tsv) == ["4", "27", "173", "250"]
    for got in (hf, tsv):
        for sid, s in got.items():
            r = repo[sid]
            assert (s.question, s.answer, s.answer_type, s.options) == (r.question, r.answer, r.answer_type, r.options)
            assert task.subsplits(s) == task.subsplits(r)
            assert np.array_equal(np.asarray(s.load_images()[0]), np.asarray(r.load_images()[0]))
    assert hf["1709"].load_images()[0].size == (306, 181)  # the real image, byte-exact


def test_mathvision_prompt_and_rules():
    task = get_task("mathvision")
    got = by_id(task.load(FIX / "mathvision" / "data" / "testmini.jsonl"))
    assert "Options: A, B, C, D, E\n" in task.prompt(got["52"])  # the choices are drawn in the image
    assert "E. $6(\\sqrt{2}-1)$" in task.prompt(got["173"])
    assert task.match("E", got["173"]) and not task.match("A", got["173"])
    assert task.score("\\boxed{E}", got["173"])[1]
    for pred, ok in (("4.8", True), ("4.80", True), ("\\frac{24}{5}", True), ("24/5", True), ("4.9", False)):
        assert task.match(pred, got["250"]) is ok, pred
    assert task.match("−2", got["203"]) and not task.match("2", got["203"])
    row = json.loads((FIX / "mathvision" / "data" / "testmini.jsonl").read_text().splitlines()[0])
    latex = task.from_repo({**row, "answer": "$2\\sqrt{3}$"}, FIX / "mathvision" / "data")
    assert latex.answer_type == "number"
    for pred, ok in (("\\sqrt{12}", True), ("2\\sqrt{3}", True), ("3.4641", True), ("2\\sqrt{2}", False)):
        assert task.match(pred, latex) is ok, pred
    assert task.score("so r = \\boxed{\\sqrt{12}}", latex)[1]
    text = task.from_repo({**row, "answer": "x^2+1"}, FIX / "mathvision" / "data")
    assert task.match("1 + x^2", text) and not task.match("x^2", text)
    word = task.from_repo({**row, "answer": "Bob"}, FIX / "mathvision" / "data")
    assert word.answer_type == "text" and task.match("bob", word) and not task.match("Alice", word)


def test_mathvision_errors(tmp_path):
    task = get_task("mathvision")
    lines = (FIX / "mathvision" / "data" / "testmini.jsonl").read_text().splitlines()
    row = json.loads(lines[2])
    lines[2] = json.dumps({**row, "answer": "F"})        # not an option letter (5 options)
    lines[4] = "{not json"
    lines[5] = json.dumps({k: v for k, v in json.loads(lines[5]).items() if k != "answer"})
    (tmp_path / "data").mkdir()
    path = tmp_path / "data" / "testmini.jsonl"
    path.write_text("\n".join(lines) + "\n")
    errors = []
    assert [s.id for s in task.load(path, errors)] == ["4", "52", "173", "1512", "1709"]
    assert [(e["line"], e["id"]) for e in errors] == [(3, "27"), (5, None), (6, "250")]
    assert "neither" not in errors[0]["error"] and "'F'" in errors[0]["error"]
    assert "bad JSON" in errors[1]["error"] and "missing 'answer'" in errors[2]["error"]


# ---------------------------------------------------------------- MMMU


def test_mmmu_hf_folder(mmmu_hf):
    assert sorted(mmmu_hf) == sorted(["validation_Accounting_3", "validation_Accounting_7", "validation_Economics_14",
                                      "validation_Finance_19", "validation_Finance_23", "validation_Manage_4",
                                      "validation_Manage_20"])
    s = mmmu_hf["validation_Economics_14"]
    assert len(s.images) == 2 and "<image 1>" in s.question and "<image 2>" in s.question
    assert [im.size[0] for im in s.load_images()] == [48, 48]
    assert (s.options, s.answer, s.answer_type) == (["10", "11", "12", "13"], "C", "choice")
    assert mmmu_hf["validation_Accounting_3"].options == ["Project A", "Project B"]
    o = mmmu_hf["validation_Finance_23"]
    assert (o.options, o.answer, o.answer_type, o.metadata["answers"]) == ([], "527.89", "number", ["527.89"])
    assert get_task("mmmu").subsplits(o) == {"question_type": "open", "subject": "Finance",
                                             "subfield": "Financial Management", "topic_difficulty": "Easy",
                                             "split": "validation"}
    assert mmmu_hf["validation_Accounting_3"].metadata["explanation"].startswith("Discount each project")
    assert mmmu_hf["validation_Finance_19"].load_images()[0].size == (248, 124)  # real, byte-exact


def test_mmmu_answers_agree_with_the_publishers_key(mmmu_hf):
    key = json.loads((FIX / "mmmu" / "answer_dict_val_subset.json").read_text())
    for sid, s in mmmu_hf.items():
        kind = {"multiple-choice": "multiple-choice", "open": "short-answer"}[s.question_type]
        assert key[sid] == {"question_type": kind, "ground_truth": s.answer}


def test_mmmu_single_file_and_split_filter(tmp_path):
    one = get_task("mmmu").load(FIX / "mmmu" / "Manage" / "validation-00000-of-00001.parquet")
    assert [s.id for s in one] == ["validation_Manage_4", "validation_Manage_20"]
    assert MMMU(split="dev").load(FIX / "mmmu" / "Manage" / "validation-00000-of-00001.parquet") == []
    with pytest.raises(DataError, match=r"no dev-\*\.parquet"):
        MMMU(split="dev").load(FIX / "mmmu")
    assert len(MMMU(split=None).load(FIX / "mmmu")) == 7


def test_mmmu_tsv(mmmu_hf):
    task = get_task("mmmu")
    tsv = task.load(FIX / "mmmu" / "MMMU_DEV_VAL.tsv")
    hf = sorted(mmmu_hf.values(), key=lambda s: (s.metadata["subject"], int(s.id.rsplit("_", 1)[1])))
    assert [s.id for s in tsv] == [str(i) for i in range(7)]  # no id column: the index
    for t, h in zip(tsv, hf):
        assert (t.question, t.answer, t.answer_type, t.options) == (h.question, h.answer, h.answer_type, h.options)
        assert task.subsplits(t) | {"topic_difficulty": ""} == task.subsplits(h) | {"topic_difficulty": ""}
        assert [np.asarray(a).tolist() for a in t.load_images()] == [np.asarray(b).tolist() for b in h.load_images()]
    assert len(tsv[2].images) == 2                            # a list-of-images cell
    assert tsv[4].options == [] and tsv[4].question_type == "open" and tsv[4].answer == "527.89"  # empty A


def test_mmmu_prompt_and_rules(mmmu_hf):
    task = get_task("mmmu")
    p = task.prompt(mmmu_hf["validation_Accounting_3"])
    assert "<image 1>" in p and "A. Project A\nB. Project B" in p
    acc = mmmu_hf["validation_Accounting_3"]
    assert task.match("B", acc) and not task.match("A", acc)
    fin, man = mmmu_hf["validation_Finance_23"], mmmu_hf["validation_Manage_20"]
    assert "Options" not in task.prompt(fin) and task.prompt(fin).endswith("one \\boxed{}.")
    for pred, ok in (("527.89", True), ("527.894", True), ("$527.89", True), ("527.885", True), ("527.9", False),
                     ("\\$527.89 million", True), ("528", False)):
        assert task.match(pred, fin) is ok, pred
    for pred, ok in (("2960", True), ("2,960", True), ("2960.0", True), ("$2,960", True), ("2961", False)):
        assert task.match(pred, man) is ok, pred
    assert task.score("The value is \\boxed{527.89}", fin)[1]


def test_mmmu_alternatives_and_tsv_edge_cases(tmp_path):
    task = get_task("mmmu")
    header, rows = read_tsv(FIX / "mmmu" / "MMMU_DEV_VAL.tsv")
    col = {h: i for i, h in enumerate(header)}
    def variant(base: int, **cells) -> list[str]:
        row = list(rows[base])
        for key, value in cells.items():
            row[col[key]] = value
        return row

    alt = variant(4, index="100", answer="['24/7', '3.429']")
    words = variant(4, index="101", answer="['Tampa', 'Florida']")
    dev = variant(0, index="102", split="dev")
    gap = variant(3, index="103", C="")                          # D filled after an empty C
    letter = variant(3, index="104", answer="E")
    b64 = variant(3, index="105", image="@@not base64@@" * 10)
    ref = variant(3, index="106", image="999")                   # no row has index 999
    fwd = variant(3, index="107", image="108")                   # a later row's image
    later = variant(5, index="108")
    loop = variant(3, index="109", image="109")
    path = write_tsv(tmp_path / "MMMU_DEV_VAL.tsv", header, [alt, words, dev, gap, letter, b64, ref, fwd, later, loop])
    errors = []
    got = by_id(task.load(path, errors))
    assert list(got) == ["100", "101", "107", "108"]
    assert got["100"].metadata["answers"] == ["24/7", "3.429"] and got["100"].answer_type == "number"
    for pred, ok in (("3.43", True), ("24/7", True), ("\\frac{24}{7}", True), ("3.5", False)):
        assert task.match(pred, got["100"]) is ok, pred
    assert got["101"].answer_type == "text" and task.match("florida", got["101"])
    assert not task.match("Miami", got["101"])
    assert got["107"].images == got["108"].images
    assert [e["id"] for e in errors] == ["103", "104", "105", "106", "109"]
    for e in errors:
        assert e["line"] == tsv_line(path, e["id"]) and e["source"] == str(path)
    msgs = [e["error"] for e in errors]
    assert "option column D is filled after an empty C" in msgs[0] and "'E' is not one of the option letters" in msgs[1]
    assert "not valid base64" in msgs[2] and "'999' is not the index of any row" in msgs[3] and "loop" in msgs[4]
    assert [s.id for s in MMMU(split=None).load(path, [])][2] == "102"


def test_mmmu_parquet_errors(tmp_path):
    src = FIX / "mmmu" / "Accounting" / "validation-00000-of-00001.parquet"
    bad = edit_parquet(src, tmp_path / "Accounting" / "validation-00000-of-00001.parquet",
                       row0={"options": "['Project A', 'Project B'"}, row1={"image_1": None})
    edit_parquet(FIX / "mmmu" / "Manage" / "validation-00000-of-00001.parquet",
                 tmp_path / "Manage" / "validation-00000-of-00001.parquet", row1={"answer": "['', 'x']"})
    errors = []
    got = get_task("mmmu").load(tmp_path, errors)
    assert [s.id for s in got] == ["validation_Manage_4"]
    assert [(Path(e["source"]).parent.name, e["line"], e["id"]) for e in errors] == [
        ("Accounting", 1, "validation_Accounting_3"), ("Accounting", 2, "validation_Accounting_7"),
        ("Manage", 2, "validation_Manage_20")]
    assert "not a Python list literal" in errors[0]["error"] and "no image" in errors[1]["error"]
    assert str(bad) in errors[0]["error"]


# ---------------------------------------------------------------- MMStar (synthetic rows in its schema)


def test_mmstar_hf(mmstar_hf):
    task = get_task("mmstar")
    s = {x.id: x for x in mmstar_hf}
    assert list(s) == ["0", "1", "2", "3", "4", "5"]
    assert s["0"].question == "Which option describe the color of the square in the image correctly?"
    assert s["0"].options == ["The square is red.", "The square is blue.", "The square is green.",
                              "The square is yellow."] and s["0"].answer == "A"
    assert s["1"].options == ["1", "2", "3", "4"]
    assert (s["2"].question, s["2"].options) == ("What fraction of the circles is filled?", ["1/3", "2/3", "1/2", "1"])
    assert "Hint" not in task.prompt(s["2"]) and s["2"].metadata["answer_hint"].startswith("Please answer")
    assert s["3"].options == ["0.25", "Other Answers", "nan", "nan"]
    assert s["4"].options == ["A", "B", "C", "D"] and "Options: A, B, C, D" in task.prompt(s["4"])
    assert s["4"].question.endswith("Answer with the option letter.")
    assert s["0"].metadata["meta_info"] == {"source": "synthetic", "split": "val", "image_path": "images/0.png"}
    assert task.subsplits(s["2"]) == {"category": "math", "l2_category": "numeric commonsense",
                                      "source": "synthetic (MathVista query form)"}
    assert task.subsplit(s["5"]) == "instance reasoning" == s["5"].question_type
    assert task.match("D", s["5"]) and task.score("\\boxed{center}", s["5"])[1] and not task.match("A", s["5"])
    assert len(accuracy_by(task, mmstar_hf, [True] * 6, "category")) == 6


def test_mmstar_tsvs(mmstar_hf):
    task = get_task("mmstar")
    own = task.load(FIX / "mmstar" / "MMStar.tsv")
    for a, b in zip(own, mmstar_hf):
        assert (a.id, a.question, a.options, a.answer) == (b.id, b.question, b.options, b.answer)
        assert task.subsplits(a) == task.subsplits(b)
        assert np.array_equal(np.asarray(a.load_images()[0]), np.asarray(b.load_images()[0]))
    assert own[5].images == own[0].images and own[2].images == own[1].images  # cells "0" and "1": other rows'
    vlm = task.load(FIX / "mmstar" / "MMStar_vlmeval.tsv")
    assert [s.id for s in vlm] == ["0", "1", "5"]
    assert vlm[0].options == mmstar_hf[0].options and vlm[2].images == vlm[0].images
    assert vlm[0].metadata["l2_category"] == "image scene and topic"   # from the l2-category column
    assert task.prompt(vlm[0]).startswith("Hint: Look at the picture.\nWhich option")


def test_mmstar_errors(tmp_path):
    header, rows = read_tsv(FIX / "mmstar" / "MMStar.tsv")
    rows[1][3] = "E"         # not a letter of the 4 options
    rows[3][2] = ""          # no image
    rows[4] = rows[4][:3]    # too few cells
    path = write_tsv(tmp_path / "MMStar.tsv", header, rows)
    errors = []
    got = get_task("mmstar").load(path, errors)
    assert [s.id for s in got] == ["0", "2", "5"]
    assert [e["id"] for e in errors] == ["1", "3", "4"]
    assert [e["line"] for e in errors] == [tsv_line(path, i) for i in ("1", "3", "4")]
    assert "'E' is not one of the option letters" in errors[0]["error"] and "empty 'image'" in errors[1]["error"]
    assert "cells" in errors[2]["error"]
    with pytest.raises(DataError, match=r"MMStar.tsv:\d+ id='1'"):
        get_task("mmstar").load(path)
    write_tsv(tmp_path / "cut.tsv", ["index", "question", "answer"], [["0", "q", "A"]])
    with pytest.raises(DataError, match="lacks the column"):
        get_task("mmstar").load(tmp_path / "cut.tsv", [])


# ---------------------------------------------------------------- registry and load_data


def test_registry_and_load_data(tmp_path):
    assert BENCHMARKS == ("mathvista", "mathvision", "mmmu", "mmstar")
    via = load_data(f"mathvista:{FIX / 'mathvista' / 'MathVista_MINI.tsv'}")
    assert [s.id for s in via] == ["106", "225", "540", "824", "852"]
    assert isinstance(task_of(via[0]), MathVista) and task_of(via[0]).match("0", via[0])
    errors = []
    assert len(load_data(f"mmmu:{FIX / 'mmmu'}", errors)) == 7 and errors == []
    assert len(load_benchmark("MMStar", FIX / "mmstar" / "mmstar.parquet")) == 6
    assert task_of(load_data("shapes:test")[0]) is None
    with pytest.raises(DataError, match="no benchmark 'mathverse'"):
        get_task("mathverse")
    with pytest.raises(DataError, match="does not exist"):
        load_data(f"mmstar:{tmp_path / 'missing.tsv'}")
    (tmp_path / "x.jsonl").write_text("")
    with pytest.raises(DataError, match="not a mmmu file"):
        get_task("mmmu").load(tmp_path / "x.jsonl")
    empty = write_tsv(tmp_path / "empty.tsv", ["index", "image", "question", "answer"], [])
    assert get_task("mmstar").load(empty) == []


def test_generic_pipeline_sees_plain_samples(vista_json):
    """The samples are valid catts samples: the generic prompt and matcher accept them too."""
    from catts.answers import answers_match
    from catts.prompts import build_prompt

    s = vista_json["540"]
    assert "A. 3/11" in build_prompt(s) and answers_match("A", s.answer, s.answer_type)
    assert answers_match("0.13", vista_json["824"].answer, vista_json["824"].answer_type)


def test_eval_and_tts_use_the_benchmark_task(tmp_path):
    """A benchmark's own prompt and matching reach the shared ask-grade-record path (eval and tts), on the
    real tiny model: every MathVista row is a record, prompted with the task's prompt, graded by its rules."""
    from catts.jobs.eval import evaluate
    from catts.jobs.probe import Dataset
    from catts.jobs.tts import TTSConfig, run_tts
    from catts.models import load_backend
    from catts.prompts import build_prompt
    from catts.tts.modules import RoleTokens

    spec = f"mathvista:{FIX / 'mathvista' / 'MathVista_MINI.tsv'}"
    errors: list = []
    samples = load_data(spec, errors)
    task = get_task("mathvista")
    assert samples and build_prompt(samples[0]) == task.prompt(samples[0])
    base = load_backend("tiny")
    summary = evaluate(base, samples, tmp_path / "eval", max_new_tokens=16, load_errors=errors)
    assert summary["n_input_rows"] == len(samples) + len(errors)
    cfg = TTSConfig(n=2, degrade=["none:0"], modules=["self-consistency", "reflection"], ablations=False,
                    tokens=RoleTokens(base=16, critic=16, reflection=8, planner=8))
    run_tts(base, {"expert": load_backend("tiny-expert")}, cfg, tmp_path / "tts", [Dataset(spec, samples, errors)])
    records = [json.loads(x) for x in (tmp_path / "tts" / "results.jsonl").read_text().splitlines()]
    assert len(records) == len(samples) + len(errors)
    by_id = {s.id: s for s in samples}
    for r in records:
        if "error" not in r:
            s = by_id[r["id"]]
            assert r["methods"]["ca-tts"]["correct"] == task.match(r["methods"]["ca-tts"]["answer"], s)
