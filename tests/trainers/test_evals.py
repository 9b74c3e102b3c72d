"""`train --eval-every` / `--eval-checkpoints`: step 0 and every checkpoint scored by the harness's own Runner
on held-out samples (never a training sample), the curve in train.json and logs.jsonl, lineage in each
run.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("trl", reason="the train command needs the `train` extra")

from medharness.checkpoints.lineage import file_hash
from medharness.cli import main
from medharness.core.errors import ConfigError, DataError
from medharness.core.paths import SET_ASIDE
from medharness.core.records import Sample
from medharness.taskfiles.task import load_task
from medharness.trainers.evals import EvalPlan, EvalRequest, TrainSamples, evaluate_point, plan


def jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def evaluated_ids(run_dir: Path, task: str = "phantom_presence") -> list[str]:
    return [row["sample"]["id"] for row in jsonl(run_dir / "samples" / f"{task}.jsonl")]


@pytest.mark.slow
def test_eval_every_scores_step_0_and_each_checkpoint_on_held_out_samples(
        tmp_path: Path, tiny_models: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("trl")
    monkeypatch.setenv("MEDHARNESS_CACHE", str(tmp_path / "cache"))
    out, base = tmp_path / "out", tiny_models["qwen2_vl"]
    # evaluated on the train split itself, so that leaving the training samples out is visible by id
    argv = ["train", "--preset", "sft_lora", "--preset", "tiny_cpu", "--task", "phantom_presence", "--model",
            str(base), "--output", str(out), "--max-steps", "4", "--eval-every", "2", "--eval-limit", "8",
            "--eval-split", "train"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "eval step 0: phantom_presence yes_no_accuracy" in printed and "eval step 4:" in printed

    info = json.loads((out / "train.json").read_text())
    assert info["status"] == "finished" and info["config"]["trl"]["save_steps"] == 2
    evals = info["evals"]
    assert (evals["status"] == "finished" and evals["every"] == 2
            and evals["n_samples"] == {"phantom_presence": 8})
    assert [p[0] for p in evals["curve"]["phantom_presence"]["points"]] == [0, 2, 4]
    assert evals["curve"]["phantom_presence"]["metric"] == "yes_no_accuracy"
    assert [r["step"] for r in jsonl(out / "logs.jsonl") if "eval" in r] == [0, 2, 4]

    trained = json.loads((out / "train_samples.json").read_text())
    assert len(trained["ids"]) == 8 and trained["split"] == "train"
    for step, model in ((0, base), (2, out / "checkpoint-2"), (4, out / "checkpoint-4")):
        run_dir = out / "evals" / f"step-{step}"
        run = json.loads((run_dir / "run.json").read_text())
        assert run["status"] == "finished" and run["config"]["model"] == str(model)
        ids = evaluated_ids(run_dir)
        assert len(ids) == 8 and not set(ids) & set(trained["ids"])  # never a training sample
        lineage = run["trained_from"]
        if step == 0:  # the base model: a folder without a manifest
            assert lineage["known"] is False
        else:  # the LoRA adapter folder itself, evaluated on its base, lineage from its manifest
            assert lineage["known"] and lineage["adapter"] and lineage["step"] == step
            assert lineage["manifest_hash"] == file_hash(Path(model) / "medharness.json")

    # again with --resume: training is done, every point is finished: nothing is scored again
    stamps = {p: (out / "evals" / p / "run.json").stat().st_mtime_ns for p in ("step-0", "step-2", "step-4")}
    assert main([*argv, "--resume"]) == 0
    assert {p: (out / "evals" / p / "run.json").stat().st_mtime_ns for p in stamps} == stamps
    assert [r["step"] for r in jsonl(out / "logs.jsonl") if "eval" in r] == [0, 2, 4]


def phantom(split: str = "test") -> list[Sample]:
    return load_task("phantom_presence").load_samples(split)


def test_held_out_means_not_the_same_split_and_id_nor_the_same_images(tmp_path: Path) -> None:
    task = load_task("phantom_presence")
    train = phantom("train")[:8]
    trained = TrainSamples.create(task.name, "train", train, [s.id for s in train])
    # the test split reuses the ids of the train split for other images: those are held out
    test_plan = plan(EvalRequest(checkpoints=True, limit=8), "phantom_presence", task, None, trained)
    assert test_plan.heldout["phantom_presence"] == [s.id for s in phantom()[:8]]
    assert test_plan.dropped == {"phantom_presence": 0}
    # on the train split, the training ids are left out
    train_plan = plan(EvalRequest(checkpoints=True, split="train", limit=4), "phantom_presence", task, None,
                      trained)
    assert train_plan.heldout["phantom_presence"] == [s.id for s in phantom("train")[8:12]]
    assert train_plan.dropped == {"phantom_presence": 8}
    # the same images and question under another split and id: the same item, left out
    copy = phantom()[0].model_copy(update={"id": "copy-0"})
    assert TrainSamples.create(task.name, "train", [copy], ["copy-0"]).contains(task.name, "test",
                                                                                phantom()[0])
    # everything trained on: nothing held out is an error before training
    everything = TrainSamples.create(task.name, "test", phantom(), [s.id for s in phantom()])
    with pytest.raises(DataError, match="no held-out samples"):
        plan(EvalRequest(checkpoints=True), "phantom_presence", task, None, everything)


def test_a_training_sample_is_refused_whatever_selected_it(tmp_path: Path) -> None:
    task = load_task("phantom_presence")
    train = phantom()[:4]
    trained = TrainSamples.create(task.name, "test", train, [s.id for s in train])
    leaky = EvalPlan(EvalRequest(checkpoints=True), ["phantom_presence"], "phantom_presence", {},
                     {"phantom_presence": [train[0].id, phantom()[5].id]}, {}, {"phantom_presence": "test"})
    leaky.write(tmp_path)
    with pytest.raises(DataError, match="refusing to evaluate phantom_presence on training samples"):
        evaluate_point(leaky, "baseline:majority", tmp_path / "evals" / "step-0", trained, tmp_path)
    assert not (tmp_path / "evals" / "step-0").exists()


def test_a_point_is_skipped_when_done_and_scored_again_on_other_ids(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDHARNESS_CACHE", str(tmp_path / "cache"))
    task = load_task("phantom_presence")
    trained = TrainSamples.create(task.name, "train", [], [])
    run_dir = tmp_path / "evals" / "step-0"

    def point(n: int) -> None:
        p = plan(EvalRequest(checkpoints=True, limit=n), "phantom_presence", task, None, trained)
        p.write(tmp_path)
        evaluate_point(p, "baseline:majority", run_dir, trained, tmp_path)

    point(4)
    stamp = (run_dir / "run.json").stat().st_mtime_ns
    point(4)  # finished, same settings: skipped
    assert (run_dir / "run.json").stat().st_mtime_ns == stamp
    point(6)  # other held-out ids: another file, the point is scored again; the old run is kept aside
    assert len(evaluated_ids(run_dir)) == 6
    (kept,) = (tmp_path / SET_ASIDE).iterdir()
    assert kept.name.startswith("evals--step-0.") and len(evaluated_ids(kept)) == 4


@pytest.mark.parametrize(("args", "message"), [
    (["--eval-limit", "8"], "need --eval-every N or --eval-checkpoints"),
    (["--eval-every", "0"], "--eval-every must be >= 1"),
    (["--eval-every", "2", "-C", "trl.save_steps=5"], "--eval-every 2 saves a checkpoint every 2 steps"),
    (["--eval-checkpoints", "--eval-tasks", "no_such_task"], "unknown task 'no_such_task'"),
])
def test_bad_eval_options_are_refused_before_training(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                      args: list[str], message: str) -> None:
    out = tmp_path / "out"
    code = main(["train", "--recipe", "sft", "--task", "phantom_presence", "--model", "/no/model", "--output",
                 str(out), *args])
    assert code == 2 and message in capsys.readouterr().err
    assert not out.exists()


def test_eval_request_validation() -> None:
    with pytest.raises(ConfigError):
        EvalRequest(limit=0)
    assert (not EvalRequest().enabled and EvalRequest(every=3).enabled
            and EvalRequest(checkpoints=True).enabled)
