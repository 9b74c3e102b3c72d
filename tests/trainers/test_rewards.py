"""Rewards are metrics scored through the task's own Recipe: equal to what `run`/`score` gives the same
text."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medharness.cli import main
from medharness.core.errors import ConfigError
from medharness.core.records import Generation
from medharness.taskfiles.task import load_task, recipe_for
from medharness.trainers.rewards import RewardSet, default_rewards, parse_rewards
from medharness.trainers.schema import RewardSpec
from medharness.trainers.targets import gold_text, rejected_texts

TEXTS = ["<think>bright spot</think><answer>yes</answer>", "<think>x</think><answer>no</answer>", "yes",
         "<answer>yes</answer>", "maybe", "<think>hmm</think> <answer>Yes.</answer><|im_end|>", ""]


def _task(name: str = "phantom_presence", prompt: str | None = "r1"):  # type: ignore[no-untyped-def]
    return load_task(name, {"prompt": prompt} if prompt else {})


def test_default_rewards_follow_the_prompt_variant() -> None:
    assert default_rewards(_task(), "r1") == [RewardSpec(metric="yes_no_accuracy", weight=0.9),
                                              RewardSpec(metric="format_compliance", args={"format": "r1"},
                                                         weight=0.1)]
    plain = _task(prompt=None)
    assert default_rewards(plain, "plain") == [RewardSpec(metric="yes_no_accuracy", weight=1.0)]


@pytest.mark.parametrize(("task_name", "variant"), [("phantom_presence", "r1"), ("phantom_box", "r1"),
                                                    ("phantom_size", "plain"), ("phantom_box", "plain")])
def test_reward_equals_recipe_score(task_name: str, variant: str) -> None:
    """Each component equals the score `run`/`medharness score` gives the same text (Recipe.score)."""
    task = _task(task_name, variant)
    samples = task.load_samples("test")[:6]
    specs = [*default_rewards(task, variant), *parse_rewards(["think_length"])]
    rewards = RewardSet(task, variant, specs, samples)
    recipe = recipe_for(task, prompt=variant)
    texts = [*TEXTS, gold_text(task, variant, samples[0]), "<think>a</think><answer>[1, 2, 30, 40]</answer>",
             "[3, 4, 50.5, 60]", "2", "grade 3"]
    for sample in samples:
        for text in texts:
            answer, comps = rewards.score(sample, text)
            ref_answer, ref_scores = recipe.score(sample, Generation(sample_id=sample.id, text=text))
            assert answer == ref_answer
            for label, value in comps.items():
                if label != "think_length":
                    assert value == ref_scores.get(label), (task_name, text, label)


def test_trl_functions_return_floats_or_none(tmp_path: Path) -> None:
    task = _task()
    samples = task.load_samples("train")[:2]
    specs = parse_rewards([{"metric": "yes_no_accuracy", "weight": 0.9},
                           {"metric": "format_compliance", "args": {"format": "r1"}, "weight": 0.1},
                           {"metric": "iou", "weight": 0.5}])
    log = tmp_path / "completions.jsonl"
    rewards = RewardSet(task, "r1", specs, samples, completions_file=log)
    gold = samples[0].target
    completions = [[{"role": "assistant", "content": f"<think>t</think><answer>{gold}</answer>"}],
                   [{"role": "assistant", "content": "nonsense"}]]
    ids = [samples[0].id, samples[0].id]
    fns = rewards.functions()
    assert [f.__name__ for f in fns] == ["yes_no_accuracy", "format_compliance", "iou", "total"]
    assert rewards.trl_weights() == [0.0, 0.0, 0.0, 1.0]  # TRL sums only `total`; components are logged
    out = [f(prompts=[None, None], completions=completions, sample_id=ids, completion_ids=[[1], [2]])
           for f in fns]
    # iou does not apply to yes/no: None, never 0; it is left out and the weights renormalised (1.5 / 1.0)
    assert out[:3] == [[1.0, 0.0], [1.0, 0.0], [None, None]]
    assert out[3] == pytest.approx([1.5, 0.0])
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(rows) == 2  # one batch logged once, although four functions read it
    assert rows[0]["rewards"] == {"yes_no_accuracy": 1.0, "format_compliance": 1.0, "iou": None}
    assert rows[0]["answer"] == gold and rows[0]["total"] == pytest.approx(1.5)
    assert rows[1]["parsed"] is False and rows[1]["total"] == 0.0


def test_an_unscored_component_is_left_out_not_counted_zero() -> None:
    """Issue 21 item 10: a None component (an unscored judge verdict) is left out of the total and the weights
    renormalised over the components present; TRL 1.16 alone would `nansum` it as 0."""
    task = _task()
    rewards = RewardSet(task, "r1", parse_rewards([{"metric": "yes_no_accuracy", "weight": 1.0},
                                                   {"metric": "format_compliance", "args": {"format": "r1"},
                                                    "weight": 1.0},
                                                   {"metric": "exact_match", "weight": 2.0}]), [])
    full = {"yes_no_accuracy": 1.0, "format_compliance": 1.0, "exact_match": 1.0}
    assert rewards.total(full) == pytest.approx(4.0)
    # exact_match unscored: (1 + 1) x 4 / 2, the score a completion right on what was scored would get
    assert rewards.total({**full, "exact_match": None}) == pytest.approx(4.0)
    assert rewards.total({**full, "exact_match": None, "format_compliance": 0.0}) == pytest.approx(2.0)
    assert rewards.total(dict.fromkeys(full)) is None  # nothing scored: TRL's unscorable completion
    zero = RewardSet(task, "r1", parse_rewards([{"metric": "yes_no_accuracy", "weight": 0.0},
                                                {"metric": "exact_match", "weight": 1.0}]), [])
    assert zero.total({"yes_no_accuracy": 1.0, "exact_match": None}) is None  # no weighted component
    # normalize_then_sum: TRL centres each component in its group, a missing one counts as the group mean
    rewards.aggregation = "normalize_then_sum"
    assert [f.__name__ for f in rewards.functions()] == ["yes_no_accuracy", "format_compliance",
                                                         "exact_match"]
    assert rewards.trl_weights() == [1.0, 1.0, 2.0]


def test_length_reward_counts_the_generated_ids(tmp_path: Path) -> None:
    """Issue 21 item 7: with `tokenizer: '@model'` the length reward counts TRL's completion_ids (the tokens
    the policy generated, capped by max_completion_length), not a re-tokenisation of the decoded text."""
    task = _task()
    samples = task.load_samples("train")[:1]
    specs = [RewardSpec(metric="length_reward", args={"scale": 0.1, "cap": 1.0, "tokenizer": "@model"}),
             RewardSpec(metric="length_reward", args={"scale": 0.01}, label="words")]
    rewards = RewardSet(task, "r1", specs, samples, model=str(tmp_path / "no-such-tokenizer"))
    assert rewards.id_counted == {"length_reward": (0.1, 1.0)}
    fn_ids, fn_words, total = rewards.functions()
    text = "<think>one two three four five six seven eight nine ten eleven</think><answer>yes</answer>"
    ids = [[5] * 8, [5] * 30]  # 8 generated ids (the cap), then 30
    kwargs = {"completions": [text, text], "sample_id": [samples[0].id] * 2, "completion_ids": ids}
    assert fn_ids(**kwargs) == pytest.approx([0.8, 1.0])  # the tokenizer is never loaded: no such folder
    assert fn_words(**kwargs) == pytest.approx([0.11, 0.11])  # 11 whitespace words of the text, as `run`
    assert total(**kwargs) == pytest.approx([0.91, 1.11])


def test_non_applicable_reward_is_refused() -> None:
    task = _task()
    samples = task.load_samples("train")[:5]
    rewards = RewardSet(task, "r1", parse_rewards(["iou", "yes_no_accuracy"]), samples)
    with pytest.raises(ConfigError, match="reward metric.*iou do not apply to task phantom_presence"):
        rewards.check_applicable(samples, lambda s: gold_text(task, "r1", s))
    ok = RewardSet(task, "r1", default_rewards(task, "r1"), samples)
    assert ok.check_applicable(samples, lambda s: gold_text(task, "r1", s)) == \
        {"yes_no_accuracy": 1.0, "format_compliance": 1.0}


def test_unknown_and_corpus_metrics() -> None:
    task = _task()
    with pytest.raises(ConfigError, match="unknown metric 'yes_no_acuracy'. Did you mean 'yes_no_accuracy'"):
        RewardSet(task, "r1", parse_rewards(["yes_no_acuracy"]), [])
    with pytest.raises(ConfigError, match="corpus metric qwk"):
        RewardSet(_task("phantom_size", None), "plain", parse_rewards(["qwk"]), [])


@pytest.mark.parametrize("task_name", ["phantom_presence", "phantom_count", "phantom_side", "phantom_size",
                                       "phantom_box"])
def test_gold_text_scores_full_marks_in_every_variant(task_name: str) -> None:
    """The SFT/DPO gold turn, written in each variant's format, reads back as the gold: primary metric 1."""
    for variant in _task(task_name, None).config.prompts.variants:
        task = _task(task_name, variant)
        recipe = recipe_for(task, prompt=variant)
        for sample in task.load_samples("train")[:8]:
            text = gold_text(task, variant, sample)
            _, scores = recipe.score(sample, Generation(sample_id=sample.id, text=text))
            primary = recipe.metrics[0].label
            assert scores[primary] == 1.0, (task_name, variant, text)
            if "format_compliance" in scores:
                assert scores["format_compliance"] == 1.0


@pytest.mark.parametrize("source", ["other_label", "other_sample"])
@pytest.mark.parametrize(("task_name", "variant"), [("phantom_count", "plain"), ("phantom_presence", "r1"),
                                                    ("phantom_side", None), ("phantom_box", "r1")])
def test_rejected_answers_are_wrong_and_well_formed(source: str, task_name: str, variant: str | None) -> None:
    task = _task(task_name, variant)
    variant = task.prompt_name
    samples = task.load_samples("train")[:12]
    recipe = recipe_for(task, prompt=variant)
    rejected = rejected_texts(task, variant, samples, source, seed=0)
    assert len(rejected) == len(samples)
    for sample in samples:
        answer, scores = recipe.score(sample, Generation(sample_id=sample.id, text=rejected[sample.id]))
        assert answer.value is not None and answer.value != sample.target
        assert scores.get("format_compliance", 1.0) == 1.0


def test_reward_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    task = _task()
    sample = task.load_samples("test")[0]
    jsonl = tmp_path / "c.jsonl"
    jsonl.write_text("\n".join(json.dumps({"sample_id": sample.id, "text": t}) for t in TEXTS[:3]) + "\n")
    assert main(["reward", "--task", "phantom_presence", "--prompt", "r1", "--completions", str(jsonl),
                 "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    recipe = recipe_for(task, prompt="r1")
    for row, text in zip(rows, TEXTS[:3]):
        _, ref = recipe.score(sample, Generation(sample_id=sample.id, text=text))
        assert row["rewards"] == {"yes_no_accuracy": ref["yes_no_accuracy"],
                                  "format_compliance": ref["format_compliance"]}
    plain = tmp_path / "c.txt"
    plain.write_text("yes\nno\n")
    assert main(["reward", "--task", "phantom_presence", "--completions", str(plain), "--sample-id",
                 sample.id, "--rewards",
                 "[{metric: yes_no_accuracy}, {metric: exact_match, weight: 0.5}]"]) == 0
    printed = capsys.readouterr()
    assert "yes_no_accuracy" in printed.out and "exact_match" in printed.out and sample.id in printed.out
    assert ("total = yes_no_accuracy x 1, exact_match x 0.5 (a missing component's weight is shared out over "
            "the others in proportion)") in printed.err
    assert main(["reward", "--task", "phantom_presence", "--completions", str(plain), "--sample-id",
                 sample.id, "--rewards", "[{metric: yes_no_acuracy}]"]) == 2
    assert "Did you mean 'yes_no_accuracy'" in capsys.readouterr().err


def test_reward_reads_a_task_file_and_refuses_non_text(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """`--task FILE.yaml` is a task file as `run --tasks` reads it (a copy under another name included); a
    completion or sample id that is not a string is refused by line, never stringified and scored."""
    sample = _task().load_samples("test")[0]
    copy = tmp_path / "my_presence.yaml"
    copy.write_text((Path(_task().path)).read_text())
    good = tmp_path / "c.jsonl"
    good.write_text(json.dumps({"sample_id": sample.id, "text": TEXTS[0]}) + "\n")
    for task in (str(copy), str(_task().path)):
        assert main(["reward", "--task", task, "--prompt", "r1", "--completions", str(good), "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["rewards"]["format_compliance"] == 1.0
    for bad in ({"sample_id": sample.id, "text": 7}, {"sample_id": sample.id, "text": ["yes"]},
                {"sample_id": 5, "text": "yes"}, {"sample_id": None, "text": "yes"}):
        file = tmp_path / "bad.jsonl"
        file.write_text(json.dumps({"sample_id": sample.id, "text": "yes"}) + "\n" + json.dumps(bad) + "\n")
        assert main(["reward", "--task", str(copy), "--completions", str(file)]) == 2
        assert "bad.jsonl:2: sample_id and text must be strings" in capsys.readouterr().err


def test_rejected_answers_from_a_finished_run(tmp_path: Path) -> None:
    """`rejected: run:DIR` takes the base model's wrong answers, matched by sample id and image."""
    from medharness.core.records import Answer, ResultRow

    task = _task()
    samples = task.load_samples("train")[:4]
    test_twin = task.load_samples("test")[0]  # same id form, other image: never matched
    rows = []
    for i, sample in enumerate([*samples, test_twin]):
        wrong = i % 2 == 0
        text = f"<think>t</think><answer>{'no' if (sample.target == 'yes') == wrong else 'yes'}</answer>"
        rows.append(ResultRow(task=task.name, task_version="1", sample=sample, prompt_hash="h",
                              generation=Generation(sample_id=sample.id, text=text),
                              answer=Answer(value=None), scores={"yes_no_accuracy": 0.0 if wrong else 1.0}))
    (tmp_path / "samples").mkdir()
    (tmp_path / "samples" / "phantom_presence.jsonl").write_text("".join(r.model_dump_json() + "\n"
                                                                         for r in rows))
    rejected = rejected_texts(task, "r1", samples, f"run:{tmp_path}", seed=0)
    assert test_twin.id == samples[0].id  # the test split's row for this id has another image
    assert rejected == {samples[0].id: rows[0].generation.text, samples[2].id: rows[2].generation.text}
    with pytest.raises(Exception, match="has no samples/phantom_presence.jsonl"):
        rejected_texts(task, "r1", samples, f"run:{tmp_path / 'nope'}", seed=0)


def test_a_corpus_metric_listed_first_is_the_primary_but_no_sample_score(tmp_path: Path) -> None:
    """QWK first: the task's primary metric (its headline) is QWK; a single answer (a reward, DPO's rejected
    answers from a run) is scored by the first per-sample metric, which the rows carry."""
    from medharness.core.records import Answer, ResultRow

    metrics = [{"name": "qwk", "args": {"min_grade": 0, "max_grade": 3}}, "grade_accuracy"]
    task = load_task("phantom_size", {"scoring.metrics": metrics})
    recipe = recipe_for(task)
    assert recipe.primary.label == "qwk" and recipe.sample_primary is not None
    assert recipe.sample_primary.label == "grade_accuracy"
    samples = task.load_samples("train")[:2]
    answers = [str(int(s.target) + i) for i, s in enumerate(samples)]  # the first right, the second wrong
    rows = [ResultRow(task=task.name, task_version="1", sample=s, prompt_hash="h",
                      generation=Generation(sample_id=s.id, text=text), answer=Answer(value=None),
                      scores=recipe.score_text(s, text)[1])
            for s, text in zip(samples, answers, strict=True)]
    assert "qwk" not in rows[0].scores and [r.scores["grade_accuracy"] for r in rows] == [1.0, 0.0]
    (tmp_path / "samples").mkdir()
    lines = "".join(r.model_dump_json() + "\n" for r in rows)
    (tmp_path / "samples" / "phantom_size.jsonl").write_text(lines)
    assert rejected_texts(task, task.prompt_name, samples, f"run:{tmp_path}", seed=0) == {
        samples[1].id: answers[1]}


def test_reward_reads_completions_through_the_common_reader(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """A FIFO (it used to block), a UTF-16 file, an integer of thousands of digits and JSON nested thousands
    deep are each a clean error naming the file, never a hang or a traceback."""
    import os

    fifo = tmp_path / "fifo.jsonl"
    os.mkfifo(fifo)
    cases = {fifo: "not a regular file", tmp_path / "u16.jsonl": "UTF-16",
             tmp_path / "big.jsonl": "big.jsonl:1: ", tmp_path / "deep.jsonl": "deep.jsonl:1: JSON nested"}
    (tmp_path / "u16.jsonl").write_bytes('{"sample_id": "a", "text": "yes"}\n'.encode("utf-16"))
    (tmp_path / "big.jsonl").write_text('{"sample_id": ' + "1" * 5000 + ', "text": "yes"}\n')
    (tmp_path / "deep.jsonl").write_text("[" * 100_000 + "\n")
    for file, message in cases.items():
        assert main(["reward", "--task", "phantom_presence", "--completions", str(file)]) == 2
        assert message in capsys.readouterr().err
