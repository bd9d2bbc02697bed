"""The pure metrics layer against its reference libraries, and ``tuneloop metrics``."""

from __future__ import annotations

import json
import math
import time
import warnings
from pathlib import Path

import krippendorff
import numpy as np
import pytest
import sacrebleu
from rouge_score.rouge_scorer import RougeScorer
from scipy.stats import binomtest
from sklearn.metrics import (
    accuracy_score,
    cohen_kappa_score,
    confusion_matrix,
    precision_recall_fscore_support,
)

from tests.conftest import CLI
from tuneloop.metrics.agreement import LEVELS, agreement, resampled_alpha
from tuneloop.metrics.classification import (
    NO_ANSWER,
    bootstrap_confusions,
    classification_metrics,
    confusion_scores,
    mapped_predictions,
    per_item_correct,
)
from tuneloop.metrics.intervals import (
    Interval,
    bootstrap_indices,
    index_blocks,
    mcnemar,
    mean_interval,
    over_resamples,
    paired_difference,
    percentile_interval,
    resample_counts,
)
from tuneloop.metrics.text import corpus_bootstrap, text_metrics

SEEDS = (0, 1, 2, 3)
WORDS = [
    "the",
    "a",
    "cat",
    "cats",
    "dog",
    "dogs",
    "sat",
    "sitting",
    "ran",
    "on",
    "under",
    "mat",
    "house",
    "quickly",
    "red",
    "big",
]


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-12)


# ----------------------------------------------------------------------------- intervals


def test_interval_format_and_dict() -> None:
    iv = Interval(0.8123, 0.7761, 0.8449)
    assert str(iv) == "0.812 [0.776, 0.845]"
    assert iv.to_dict() == {"value": 0.8123, "low": 0.7761, "high": 0.8449}
    undefined = Interval(math.nan, math.nan, math.nan)
    assert undefined.to_dict() == {"value": None, "low": None, "high": None}
    assert str(undefined) == "n/a [n/a, n/a]"


def test_bootstrap_indices_and_counts() -> None:
    idx = bootstrap_indices(7, 50, seed=3)
    assert idx.shape == (50, 7) and idx.min() >= 0 and idx.max() <= 6
    assert np.array_equal(idx, bootstrap_indices(7, 50, seed=3))
    assert not np.array_equal(idx, bootstrap_indices(7, 50, seed=4))
    blocks = list(index_blocks(7, 50, seed=3, max_cells=7 * 6))
    assert len(blocks) == 9 and np.array_equal(np.concatenate(blocks), idx)
    counts = resample_counts(idx, 7)
    assert counts.shape == (50, 7) and (counts.sum(axis=1) == 7).all()
    for row, c in zip(idx, counts, strict=True):
        assert np.array_equal(np.bincount(row, minlength=7), c)


def test_over_resamples_in_blocks_equals_one_draw() -> None:
    x = np.random.default_rng(1).random(5000)
    blocks = list(index_blocks(5000, 1000, seed=4))
    assert len(blocks) > 1  # 5M indices: drawn in blocks
    stacked = over_resamples(5000, 1000, 4, lambda idx: x[idx].mean(axis=1))
    assert np.array_equal(stacked, x[bootstrap_indices(5000, 1000, 4)].mean(axis=1))


def test_percentile_interval_ignores_nan() -> None:
    samples = np.array([np.nan, *range(101)], dtype=float)
    iv = percentile_interval(50.0, samples, 0.9)
    assert (iv.low, iv.high) == (pytest.approx(5.0), pytest.approx(95.0))
    assert math.isnan(percentile_interval(1.0, [np.nan, np.nan]).low)
    with pytest.raises(ValueError, match="confidence"):
        percentile_interval(1.0, [1.0], 1.0)


def test_mean_interval() -> None:
    scores = np.random.default_rng(0).random(200)
    iv = mean_interval(scores, resamples=500, seed=1)
    assert iv.value == float(np.mean(scores))
    assert iv.low < iv.value < iv.high
    assert iv == mean_interval(scores, resamples=500, seed=1)
    assert iv != mean_interval(scores, resamples=500, seed=2)
    narrow = mean_interval(scores, resamples=500, seed=1, confidence=0.5)
    assert iv.low < narrow.low < narrow.high < iv.high
    assert math.isnan(mean_interval([]).value)


def test_paired_difference() -> None:
    rng = np.random.default_rng(0)
    a = rng.random(300)
    better = paired_difference(a, a + 0.05 + rng.normal(0, 0.05, 300), resamples=500)
    assert better.n == 300 and better.diff.low > 0 and better.p_value < 0.01
    worse = paired_difference(a + 0.05, a, resamples=500)
    assert worse.diff.value == pytest.approx(-0.05) and worse.diff.high < 0
    assert worse.p_value < 0.01
    same = paired_difference(a, a, resamples=500)
    assert same.diff.value == 0 and same.p_value == 1.0
    noise = paired_difference(a, a + rng.normal(0, 0.3, 300), resamples=500)
    assert noise.diff.low < 0 < noise.diff.high and noise.p_value > 0.05
    with pytest.raises(ValueError, match="equal lengths"):
        paired_difference([1.0], [1.0, 2.0])


def test_mcnemar_equals_binomtest() -> None:
    rng = np.random.default_rng(5)
    for _ in range(5):
        a = rng.random(80) < 0.7
        b = rng.random(80) < 0.6
        only_a = int((a & ~b).sum())
        only_b = int((b & ~a).sum())
        m = mcnemar(list(a), list(b))
        assert (m.only_a, m.only_b, m.n) == (only_a, only_b, 80)
        expected = binomtest(min(only_a, only_b), only_a + only_b, 0.5).pvalue
        assert m.p_value == expected
        assert m.statistic == (abs(only_a - only_b) - 1) ** 2 / (only_a + only_b)
    same = mcnemar([True, False, True], [True, False, True])
    assert (same.only_a, same.only_b, same.p_value) == (0, 0, 1.0)
    assert mcnemar([True] * 10, [False] * 10).p_value == binomtest(0, 10, 0.5).pvalue


# ----------------------------------------------------------------------------- classification


def random_classification(
    seed: int, n: int = 300
) -> tuple[list[str], list[str | None], list[str] | None]:
    rng = np.random.default_rng(seed)
    labels = ["neg", "neu", "pos", "mixed"][: 2 + seed % 3]
    gold = [str(x) for x in rng.choice(labels, n, p=None)]
    pred: list[str | None] = []
    for g in gold:
        r = rng.random()
        if r < 0.6:
            pred.append(g)
        elif r < 0.65:
            pred.append(None)  # no answer
        elif r < 0.68 and seed % 2:
            pred.append("other")  # outside the label set
        else:
            pred.append(str(rng.choice(labels[:-1])))  # the last class is never predicted wrong
    given = [*labels, "unused"] if seed == 3 else None
    return gold, pred, given


def assert_equals_sklearn(
    gold: list[str], pred: list[str | None], labels: list[str] | None
) -> None:
    m = classification_metrics(gold, pred, labels, resamples=200, seed=0)
    names = sorted(set(gold)) if labels is None else labels
    mapped = [NO_ANSWER if p is None or p not in names else p for p in pred]
    assert m.labels == names and m.n == len(gold)
    assert m.accuracy.value == accuracy_score(gold, mapped)
    p, r, f, s = precision_recall_fscore_support(
        gold, mapped, labels=names, average=None, zero_division=0
    )
    for i, name in enumerate(names):
        scores = m.per_class[name]
        assert (scores.precision.value, scores.recall.value, scores.f1.value) == (p[i], r[i], f[i])
        assert scores.support == s[i]
    for avg, got in (("macro", m.macro), ("micro", m.micro)):
        ref = precision_recall_fscore_support(
            gold, mapped, labels=names, average=avg, zero_division=0
        )
        assert (got["precision"].value, got["recall"].value, got["f1"].value) == ref[:3]
    has_no_answer = any(x == NO_ANSWER for x in mapped)
    columns = [*names, NO_ANSWER] if has_no_answer else names
    assert m.columns == columns
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="A single label was found", category=UserWarning)
        reference = confusion_matrix(gold, mapped, labels=columns)
    assert m.confusion == reference[: len(names)].tolist()
    assert m.no_answer == mapped.count(NO_ANSWER)
    for iv in [m.accuracy, *m.macro.values(), *m.micro.values()]:
        assert iv.low <= iv.value <= iv.high


@pytest.mark.parametrize("seed", SEEDS)
def test_classification_equals_sklearn(seed: int) -> None:
    assert_equals_sklearn(*random_classification(seed))


def test_classification_edge_cases() -> None:
    # a single class, always right
    assert_equals_sklearn(["a"] * 5, ["a"] * 5, None)
    # a single class with a missing answer; a class never predicted
    assert_equals_sklearn(["a", "a", "b"], ["a", None, "a"], None)
    # every prediction missing
    assert_equals_sklearn(["a", "b", "b"], [None, None, None], None)
    m = classification_metrics(["x", "y"], [None, "y"], resamples=50)
    assert m.confusion == [[0, 0, 1], [0, 1, 0]] and m.columns == ["x", "y", NO_ANSWER]
    json.dumps(m.to_dict())
    with pytest.raises(ValueError, match="not among the labels"):
        classification_metrics(["a", "c"], ["a", "a"], ["a", "b"])
    with pytest.raises(ValueError, match="2 items"):
        classification_metrics(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="no items"):
        classification_metrics([], [])
    assert per_item_correct(["a", "b", "c"], ["a", None, "b"]) == [True, False, False]


@pytest.mark.parametrize("seed", SEEDS)
def test_vectorised_bootstrap_equals_sklearn(seed: int) -> None:
    gold, pred, given = random_classification(seed, n=120)
    names = sorted(set(gold)) if given is None else given
    mapped = mapped_predictions(pred, names)
    columns = [*names, NO_ANSWER]
    index = {x: i for i, x in enumerate(columns)}
    g = np.array([index[x] for x in gold])
    p = np.array([index[x] for x in mapped])
    idx = bootstrap_indices(len(gold), 6, seed)
    cms = bootstrap_confusions(g, p, len(names), len(columns), idx)
    derived = confusion_scores(cms)
    for r, row in enumerate(idx):
        gs = [gold[i] for i in row]
        ps = [mapped[i] for i in row]
        assert cms[r].tolist() == confusion_matrix(gs, ps, labels=columns)[: len(names)].tolist()
        assert close(derived["accuracy"][r], accuracy_score(gs, ps))
        per = precision_recall_fscore_support(gs, ps, labels=names, average=None, zero_division=0)
        for k, key in enumerate(("precision", "recall", "f1")):
            assert np.allclose(derived[key][r], per[k], rtol=1e-12, atol=1e-12)
        for avg in ("macro", "micro"):
            ref = precision_recall_fscore_support(
                gs, ps, labels=names, average=avg, zero_division=0
            )
            for k, key in enumerate(("precision", "recall", "f1")):
                assert close(derived[f"{avg}_{key}"][r], ref[k])


def test_classification_interval_is_seeded_and_fast() -> None:
    gold, pred, _ = random_classification(0, n=500)
    first = classification_metrics(gold, pred, resamples=1000, seed=7)
    start = time.perf_counter()
    again = classification_metrics(gold, pred, resamples=1000, seed=7)
    elapsed = time.perf_counter() - start
    assert again == first
    assert classification_metrics(gold, pred, resamples=1000, seed=8).accuracy != first.accuracy
    assert elapsed < 0.5, f"1000 resamples of 500 items took {elapsed:.2f}s"


# ----------------------------------------------------------------------------- text


def random_texts(seed: int, n: int = 60) -> tuple[list[str], list[str]]:
    rng = np.random.default_rng(seed)
    refs = [" ".join(rng.choice(WORDS, int(rng.integers(1, 20)))) for _ in range(n)]
    preds = []
    for ref in refs:
        words = ref.split()
        keep = [w for w in words if rng.random() < 0.7]
        extra = list(rng.choice(WORDS, int(rng.integers(0, 4))))
        preds.append(" ".join(keep + extra))
    refs[0] = ""  # an empty reference
    preds[1] = ""  # an empty prediction
    refs[2] = preds[2] = ""
    return refs, preds


@pytest.mark.parametrize("seed", SEEDS[:3])
def test_text_equals_reference_libraries(seed: int) -> None:
    refs, preds = random_texts(seed)
    m = text_metrics(refs, preds, resamples=200, seed=seed)
    scorer = RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    rouge = [scorer.score(r, p) for r, p in zip(refs, preds, strict=True)]
    for key, got in (("rouge1", m.rouge1), ("rouge2", m.rouge2), ("rougeL", m.rougeL)):
        assert got.value == float(np.mean([s[key].fmeasure for s in rouge]))
        assert got.low <= got.value <= got.high
    assert m.bleu.value == sacrebleu.corpus_bleu(preds, [refs]).score
    assert m.chrf.value == sacrebleu.corpus_chrf(preds, [refs]).score
    assert m.bleu.low <= m.bleu.value <= m.bleu.high
    assert m.chrf.low <= m.chrf.value <= m.chrf.high
    for item, r, p, s in zip(m.per_item, refs, preds, rouge, strict=True):
        assert item["chrf"] == sacrebleu.sentence_chrf(p, [r]).score
        assert item["rougeL"] == s["rougeL"].fmeasure
    assert m.n == len(refs) and len(m.per_item) == len(refs)
    assert json.loads(json.dumps(m.to_dict())) == m.to_dict()


def test_text_bootstrap_resamples_equal_corpus_scores() -> None:
    refs, preds = random_texts(9, n=40)
    idx = bootstrap_indices(len(refs), 5, seed=2)
    for metric, corpus in (
        (sacrebleu.BLEU(), sacrebleu.corpus_bleu),
        (sacrebleu.CHRF(), sacrebleu.corpus_chrf),
    ):
        value, _, samples = corpus_bootstrap(metric, refs, preds, 5, seed=2)
        assert value == corpus(preds, [refs]).score
        for row, sample in zip(idx, samples, strict=True):
            rs = [refs[i] for i in row]
            ps = [preds[i] for i in row]
            assert sample == pytest.approx(corpus(ps, [rs]).score, rel=1e-12, abs=1e-12)


def test_text_interval_is_seeded() -> None:
    refs, preds = random_texts(4)
    a = text_metrics(refs, preds, resamples=300, seed=1)
    assert a == text_metrics(refs, preds, resamples=300, seed=1)
    assert a.bleu != text_metrics(refs, preds, resamples=300, seed=2).bleu
    with pytest.raises(ValueError, match="refs has 2"):
        text_metrics(["a", "b"], ["a"])


# ----------------------------------------------------------------------------- agreement


def random_ratings(seed: int, items: int = 80, raters: int = 3) -> list[list[object | None]]:
    rng = np.random.default_rng(seed)
    truth = rng.integers(1, 6, items)
    rows: list[list[object | None]] = []
    for t in truth:
        row: list[object | None] = []
        for _ in range(raters):
            if rng.random() < 0.2:
                row.append(None)
            else:
                row.append(int(np.clip(t + rng.integers(-1, 2), 1, 5)))
        rows.append(row)
    rows[0] = [None] * raters  # an item nobody rated
    rows[1] = [3] + [None] * (raters - 1)  # an item rated once
    return rows


def reliability(rows: list[list[object | None]]) -> np.ndarray:
    return np.array([[np.nan if v is None else v for v in row] for row in rows], dtype=float).T


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("seed", SEEDS[:3])
def test_alpha_and_kappa_equal_reference_libraries(level: str, seed: int) -> None:
    rows = random_ratings(seed)
    result = agreement(rows, level, resamples=300, seed=seed)
    data = reliability(rows)
    assert result.alpha.value == krippendorff.alpha(
        reliability_data=data, level_of_measurement=level
    )
    assert result.alpha.low <= result.alpha.value <= result.alpha.high
    assert result.n_raters == 3 and result.level == level and not result.notes
    assert result.n_items == int(((~np.isnan(data)).sum(axis=0) >= 2).sum())
    weights = {"nominal": None, "ordinal": "linear"}.get(level, "quadratic")
    assert [(p.a, p.b) for p in result.pairs] == [
        ("rater 1", "rater 2"),
        ("rater 1", "rater 3"),
        ("rater 2", "rater 3"),
    ]
    domain = np.unique(data[~np.isnan(data)])
    for pair in result.pairs:
        i, j = int(pair.a[-1]) - 1, int(pair.b[-1]) - 1
        both = ~np.isnan(data[i]) & ~np.isnan(data[j])
        assert pair.n == int(both.sum())
        expected = cohen_kappa_score(data[i, both], data[j, both], labels=domain, weights=weights)
        assert pair.kappa == expected
        assert pair.observed == float(np.mean(data[i, both] == data[j, both]))


@pytest.mark.parametrize("level", LEVELS)
def test_resampled_alpha_equals_krippendorff(level: str) -> None:
    data = reliability(random_ratings(11, items=50, raters=4))
    rated = ~np.isnan(data.T)
    keep = rated.sum(axis=1) >= 2
    domain = np.unique(data[~np.isnan(data)])
    counts = (data.T[keep][:, :, None] == domain[None, None, :]).sum(axis=1)
    idx = bootstrap_indices(len(counts), 8, seed=0)
    samples = resampled_alpha(counts, domain, level, idx)
    for row, sample in zip(idx, samples, strict=True):
        expected = krippendorff.alpha(
            value_counts=counts[row], value_domain=domain, level_of_measurement=level
        )
        assert sample == pytest.approx(expected, rel=1e-10, abs=1e-12)


def test_agreement_strings_nominal_and_ordinal_order() -> None:
    rng = np.random.default_rng(3)
    order = ["bad", "ok", "good", "great"]
    rows: list[list[object | None]] = [
        [None if rng.random() < 0.15 else str(rng.choice(order)) for _ in range(3)]
        for _ in range(60)
    ]
    strings = np.array([["nan" if v is None else v for v in row] for row in rows]).T
    nominal = agreement(rows, "nominal", rater_names=["ann", "bob", "cy"], resamples=200)
    assert nominal.alpha.value == pytest.approx(
        krippendorff.alpha(reliability_data=strings, level_of_measurement="nominal"), rel=1e-12
    )
    ordinal = agreement(rows, "ordinal", value_order=order, resamples=200)
    assert ordinal.alpha.value == pytest.approx(
        krippendorff.alpha(
            reliability_data=strings, value_domain=order, level_of_measurement="ordinal"
        ),
        rel=1e-12,
    )
    pair = nominal.pairs[0]
    assert (pair.a, pair.b) == ("ann", "bob")
    both = [(r[0], r[1]) for r in rows if r[0] is not None and r[1] is not None]
    assert pair.kappa == pytest.approx(
        cohen_kappa_score([x for x, _ in both], [y for _, y in both]), rel=1e-12
    )
    position = {v: i for i, v in enumerate(order)}
    assert ordinal.pairs[0].kappa == pytest.approx(
        cohen_kappa_score(
            [position[x] for x, _ in both],
            [position[y] for _, y in both],
            labels=list(range(4)),
            weights="linear",
        ),
        rel=1e-12,
    )
    with pytest.raises(ValueError, match="need value_order"):
        agreement(rows, "ordinal")
    with pytest.raises(ValueError, match="not in value_order"):
        agreement([["bad", "meh"], ["ok", "ok"]], "ordinal", value_order=order)


def test_agreement_numbers_with_value_order_and_nan() -> None:
    rows = [[0, 1.0, float("nan")], [4, 4, 3], [2, "", 2], [1, 0, 1], [3, 3, None]]
    result = agreement(rows, "ordinal", value_order=list(range(5)), resamples=100)
    data = np.array(
        [[np.nan if v in ("", None) else float(v) for v in row] for row in rows]  # type: ignore[arg-type]
    ).T
    assert result.alpha.value == pytest.approx(
        krippendorff.alpha(reliability_data=data, level_of_measurement="ordinal"), rel=1e-12
    )
    assert result.n_items == 5


def test_agreement_undefined_cases_do_not_crash() -> None:
    same = agreement([["x", "x"], ["x", "x"], ["x", None]], resamples=50)
    assert math.isnan(same.alpha.value) and same.n_items == 2
    assert any("alpha is undefined" in n for n in same.notes)
    assert math.isnan(same.pairs[0].kappa) and same.pairs[0].observed == 1.0
    data = same.to_dict()
    assert data["alpha"] == {"value": None, "low": None, "high": None}
    assert data["pairs"][0]["kappa"] is None
    json.dumps(data)

    lonely = agreement([[1, None], [None, 2], [3, None]], "interval", resamples=50)
    assert lonely.n_items == 0 and math.isnan(lonely.alpha.value) and lonely.pairs == []
    assert any("no item" in n for n in lonely.notes)

    one_rater = agreement([[1], [2]], rater_names=["solo"], resamples=50)
    assert one_rater.n_raters == 1 and math.isnan(one_rater.alpha.value)

    empty = agreement([], rater_names=["a", "b"], resamples=50)
    assert empty.n_items == 0 and math.isnan(empty.alpha.value)

    with pytest.raises(ValueError, match="one rating cell per rater"):
        agreement([[1, 2], [1]])
    with pytest.raises(ValueError, match="level"):
        agreement([[1, 2]], "fuzzy")


def test_agreement_interval_is_seeded() -> None:
    rows = random_ratings(2)
    a = agreement(rows, "interval", resamples=300, seed=1)
    assert a == agreement(rows, "interval", resamples=300, seed=1)
    assert a.alpha != agreement(rows, "interval", resamples=300, seed=2).alpha


# ----------------------------------------------------------------------------- CLI


def write_jsonl(path: Path, rows: list[dict[str, object]]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def test_cli_classification_json_and_table(cli: CLI, tmp_path: Path) -> None:
    gold, pred, _ = random_classification(1, n=80)
    g = write_jsonl(
        tmp_path / "gold.jsonl",
        [{"id": f"r{i}", "text": "…", "label": x} for i, x in enumerate(gold)],
    )
    # predictions in another order, matched by id; None -> no answer
    rows = [{"id": f"r{i}", "prediction": x} for i, x in enumerate(pred)][::-1]
    p = write_jsonl(tmp_path / "pred.jsonl", rows)
    code, out, err = cli("metrics", "classification", "--gold", g, "--pred", p, "--json")
    assert code == 0, err
    expected = classification_metrics(gold, pred, resamples=1000, seed=0)
    assert json.loads(out) == expected.to_dict()

    code, out, _ = cli("metrics", "classification", "--gold", g, "--pred", p, "--resamples", "200")
    assert code == 0
    assert "accuracy" in out and "macro avg" in out and "confusion matrix" in out
    assert NO_ANSWER in out

    # plain text files, line by line, with an explicit label set
    (tmp_path / "g.txt").write_text("pos\nneg\npos\n")
    (tmp_path / "p.txt").write_text("pos\n\nneg\n")
    code, out, _ = cli(
        "metrics", "classification", "--gold", "g.txt", "--pred", "p.txt",
        "--labels", "pos,neg,neu", "--json",
    )  # fmt: skip
    assert code == 0
    expected = classification_metrics(
        ["pos", "neg", "pos"], ["pos", None, "neg"], ["pos", "neg", "neu"]
    )
    assert json.loads(out) == expected.to_dict()


def test_cli_classification_csv_field(cli: CLI, tmp_path: Path) -> None:
    (tmp_path / "g.csv").write_text("text,y\nhello,a\nbye,b\n")
    (tmp_path / "p.tsv").write_text("y\tz\na\t1\na\t2\n")
    code, out, err = cli(
        "metrics", "classification", "--gold", "g.csv", "--pred", "p.tsv", "--field", "y",
        "--json",
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["accuracy"]["value"] == 0.5


def test_cli_classification_bad_input(cli: CLI, tmp_path: Path) -> None:
    g = write_jsonl(tmp_path / "gold.jsonl", [{"label": "a"}, {"label": "b"}, {"label": "a"}])
    short = write_jsonl(tmp_path / "short.jsonl", [{"label": "a"}, {"label": "b"}])
    code, _, err = cli("metrics", "classification", "--gold", g, "--pred", short)
    assert code == 1
    assert "gold.jsonl has 3 values" in err and "short.jsonl has 2" in err

    (tmp_path / "broken.jsonl").write_text('{"label": "a"}\n{"label": \n{"label": "b"}\n')
    code, _, err = cli("metrics", "classification", "--gold", g, "--pred", "broken.jsonl")
    assert code == 1 and "broken.jsonl:2" in err and "bad JSON" in err
    assert "Traceback" not in err

    a = write_jsonl(tmp_path / "a.jsonl", [{"id": 1, "label": "x"}, {"id": 2, "label": "y"}])
    b = write_jsonl(tmp_path / "b.jsonl", [{"id": 1, "label": "x"}, {"id": 3, "label": "y"}])
    code, _, err = cli("metrics", "classification", "--gold", a, "--pred", b)
    assert code == 1 and "b.jsonl" in err and "'2'" in err

    dup = write_jsonl(tmp_path / "dup.jsonl", [{"id": 1, "label": "x"}, {"id": 1, "label": "y"}])
    code, _, err = cli("metrics", "classification", "--gold", a, "--pred", dup)
    assert code == 1 and "dup.jsonl:2" in err and "duplicate id" in err

    nofield = write_jsonl(tmp_path / "nofield.jsonl", [{"answer": "x"}, {"answer": "y"}])
    code, _, err = cli("metrics", "classification", "--gold", a, "--pred", nofield)
    assert code == 1 and "nofield.jsonl:1" in err and "--field" in err

    missing = write_jsonl(tmp_path / "missing.jsonl", [{"label": "x"}, {"other": "y"}])
    code, _, err = cli("metrics", "classification", "--gold", missing, "--pred", missing)
    assert code == 1 and "missing.jsonl:2" in err and "field 'label'" in err

    code, _, err = cli("metrics", "classification", "--gold", g, "--pred", g, "--labels", "a")
    assert code == 1 and "gold.jsonl:2" in err and "'b'" in err

    code, _, err = cli("metrics", "classification", "--gold", "nope.txt", "--pred", g)
    assert code == 1 and "nope.txt" in err


def test_cli_text(cli: CLI, tmp_path: Path) -> None:
    refs, preds = random_texts(5, n=30)
    refs_path = tmp_path / "refs.txt"
    refs_path.write_text("".join(r + "\n" for r in refs))
    p = write_jsonl(tmp_path / "preds.jsonl", [{"text": x} for x in preds])
    code, out, err = cli("metrics", "text", "--refs", str(refs_path), "--preds", p, "--json")
    assert code == 0, err
    assert json.loads(out) == text_metrics(refs, preds).to_dict()
    code, out, _ = cli("metrics", "text", "--refs", str(refs_path), "--preds", p)
    assert code == 0 and "ROUGE-L" in out and "BLEU" in out and "chrF" in out

    short = write_jsonl(tmp_path / "short.jsonl", [{"text": "x"}])
    code, _, err = cli("metrics", "text", "--refs", str(refs_path), "--preds", short)
    assert code == 1 and "refs.txt has 30 values" in err


def test_cli_agreement(cli: CLI, tmp_path: Path) -> None:
    rows = random_ratings(4, items=40)
    lines = ["id,ann,bob,cy"] + [
        f"item{i}," + ",".join("" if v is None else str(v) for v in row)
        for i, row in enumerate(rows)
    ]
    (tmp_path / "ratings.csv").write_text("\n".join(lines) + "\n")
    code, out, err = cli(
        "metrics", "agreement", "--ratings", "ratings.csv", "--level", "ordinal", "--json"
    )
    assert code == 0, err
    numbers = [[None if v is None else float(v) for v in row] for row in rows]  # type: ignore[arg-type]
    expected = agreement(numbers, "ordinal", rater_names=["ann", "bob", "cy"])
    assert json.loads(out) == expected.to_dict()
    code, out, _ = cli("metrics", "agreement", "--ratings", "ratings.csv", "--level", "interval")
    assert code == 0 and "Krippendorff" in out and "ann" in out and "quadratic" in out

    (tmp_path / "words.tsv").write_text("a\tb\nbad\tok\ngood\tgood\nok\t\nok\tok\n")
    code, out, err = cli(
        "metrics", "agreement", "--ratings", "words.tsv", "--level", "ordinal",
        "--order", "bad,ok,good", "--json",
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["n_items"] == 3
    code, _, err = cli("metrics", "agreement", "--ratings", "words.tsv", "--level", "ordinal")
    assert code == 1 and "words.tsv" in err and "--order" in err
    code, _, err = cli(
        "metrics", "agreement", "--ratings", "words.tsv", "--level", "ordinal",
        "--order", "bad,good",
    )  # fmt: skip
    assert code == 1 and "words.tsv:2" in err and "'ok'" in err and "field 'b'" in err

    (tmp_path / "same.csv").write_text("a,b\nx,x\nx,x\n")
    code, out, _ = cli("metrics", "agreement", "--ratings", "same.csv", "--json")
    assert code == 0 and json.loads(out)["alpha"]["value"] is None
    code, out, _ = cli("metrics", "agreement", "--ratings", "same.csv")
    assert code == 0 and "n/a" in out and "undefined" in out

    (tmp_path / "ragged.csv").write_text("a,b\n1,2\n1,2,3\n")
    code, _, err = cli("metrics", "agreement", "--ratings", "ragged.csv")
    assert code == 1 and "ragged.csv:3" in err
