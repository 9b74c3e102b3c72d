"""Round trips with the real peers (slow): export phantom_presence, run lm-eval (in this environment, as a
library) and lmms-eval (its own environment, `.venv-lmms` from scripts/peer-envs.sh, as a subprocess) on it
with the tiny model (greedy), import their logged samples, and compare with medharness's own run of the same
model on the same samples: the same text for every sample, so the same score."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from medharness.bridges.export import export_task
from medharness.bridges.importer import ImportRequest, import_predictions
from medharness.runs.runlog import RunDir

pytestmark = pytest.mark.slow
TASK = "phantom_presence"
N = 8
ROOT = Path(__file__).resolve().parents[2]
LMMS_PYTHON = Path(os.environ.get("MEDHARNESS_LMMS_PYTHON", ROOT / ".venv-lmms" / "bin" / "python"))
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("transformers", reason="the hf extra runs the tiny model")
    from medharness.checkpoints.tiny import build_tiny_vlm

    return Path(build_tiny_vlm(tmp_path_factory.mktemp("tiny") / "tiny"))


def _own_run(model: Path, task: str, out: Path, data_dir: str | None = None, tokens: int | None = None
             ) -> RunDir:
    from medharness.runs.pipeline import RunConfig, Runner

    return Runner(RunConfig(model=str(model), backend="hf", tasks=task, limit=N, cache=False,
                            data_dir=data_dir, max_new_tokens=tokens,
                            backend_options={"device": "cpu", "dtype": "float32"}), output=out).run()


@pytest.fixture(scope="module")
def medharness_run(tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, RunDir]:
    return tiny, _own_run(tiny, TASK, tmp_path_factory.mktemp("round_trip") / "medharness")


def _compare(imported: RunDir, own: RunDir, task: str = TASK) -> None:
    ours = {r.sample.id: r for r in own.rows(task)}
    theirs = {r.sample.id: r for r in imported.rows(task)}
    assert set(theirs) == set(ours) and len(ours) == N
    assert ({k: r.generation.text for k, r in theirs.items()}
            == {k: r.generation.text for k, r in ours.items()})
    a, b = imported.log.tasks[task].summary, own.log.tasks[task].summary
    assert a is not None and b is not None
    assert a.metrics == b.metrics and a.n_unparsed == b.n_unparsed


def _lm_eval(model: Path, task: str, tmp_path: Path, data_dir: str | None = None, tokens: int | None = None
             ) -> tuple[dict, Path]:
    """Export `task`, run lm-eval's hf-multimodal on it (greedy, the chat template), return its results and
    the samples file it logged."""
    import lm_eval
    from lm_eval.loggers import EvaluationTracker
    from lm_eval.tasks import TaskManager

    overrides = {"generation.max_new_tokens": tokens} if tokens else None
    export_task("lm-eval", task, tmp_path / "task", data_dir=data_dir, limit=N, overrides=overrides)
    tracker = EvaluationTracker(output_path=str(tmp_path / "out"))
    results = lm_eval.simple_evaluate(
        model="hf-multimodal", model_args=f"pretrained={model},device=cpu,dtype=float32,max_images=1",
        tasks=[f"medharness_{task}"], task_manager=TaskManager(include_path=str(tmp_path / "task"),
                                                               include_defaults=False),
        apply_chat_template=True, log_samples=True, evaluation_tracker=tracker, batch_size=8)
    assert results is not None
    tracker.save_results_aggregated(results=results, samples=results["samples"])
    tracker.save_results_samples(task_name=f"medharness_{task}",
                                 samples=results["samples"][f"medharness_{task}"])
    (file,) = (tmp_path / "out").glob(f"*/samples_medharness_{task}_*.jsonl")
    return results, file


def test_lm_eval_round_trip(tmp_path: Path, medharness_run: tuple[Path, RunDir],
                            monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("lm_eval", reason="the peers extra installs lm-eval")
    for key, value in {**OFFLINE, "HF_HOME": str(tmp_path / "hf")}.items():
        monkeypatch.setenv(key, value)
    model, own = medharness_run
    results, file = _lm_eval(model, TASK, tmp_path)
    imported = import_predictions(ImportRequest(tool="lm-eval", file=file, task=TASK,
                                                output=tmp_path / "run"))
    assert imported.log.model is not None and imported.log.model.startswith("lm-eval==")
    _compare(imported, own)
    # lm-eval's own number (medharness's scorer inside the exported task) is the same
    value = results["results"][f"medharness_{TASK}"]["yes_no_accuracy,none"]
    assert value == pytest.approx(own.log.tasks[TASK].summary.metrics["yes_no_accuracy"].value)  # type: ignore[union-attr]


@pytest.mark.shared_data
def test_lm_eval_round_trip_on_vqa_rad(tmp_path: Path, tiny: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same on real VQA-RAD images and questions (open and closed), exported as PNG files. At most 16 new
    tokens on both sides: at the task's 64, 7 of 8 texts were identical and the eighth parted after about 30
    characters in a run of the random-weight model's gibberish (at batch 8 and at batch 1 alike): a near-tie
    between two next tokens that the two tools' numerics break differently, not a different prompt or
    image."""
    pytest.importorskip("lm_eval", reason="the peers extra installs lm-eval")
    from shared_data import shared

    data = str(shared("vqa-rad-test"))
    for key, value in {**OFFLINE, "HF_HOME": str(tmp_path / "hf")}.items():
        monkeypatch.setenv(key, value)
    own = _own_run(tiny, "vqa_rad", tmp_path / "medharness", data_dir=data, tokens=16)
    _, file = _lm_eval(tiny, "vqa_rad", tmp_path, data_dir=data, tokens=16)
    imported = import_predictions(ImportRequest(tool="lm-eval", file=file, task="vqa_rad", data_dir=data,
                                                output=tmp_path / "run", allow_unmatched=False))
    _compare(imported, own, "vqa_rad")
    # lm-eval sent the chat prompt medharness's rows say (same text, image where medharness puts it)
    import json

    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny)
    sent = {str(json.loads(line)["doc"]["id"]): json.loads(line)["arguments"]["gen_args_0"]["arg_0"]
            for line in file.read_text().splitlines()}
    from medharness.taskfiles.task import load_task

    task = load_task("vqa_rad", {"data_dir": data})
    for row in own.rows("vqa_rad"):
        text = "".join(p.text or "" for p in task.render(row.sample, task.settings()).messages[-1].content)
        chat = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
        assert sent[row.sample.id] == processor.apply_chat_template(chat, add_generation_prompt=True,
                                                                    tokenize=False)



def test_lmms_eval_round_trip(tmp_path: Path, medharness_run: tuple[Path, RunDir]) -> None:
    if not LMMS_PYTHON.is_file():
        pytest.skip(f"lmms-eval's environment {LMMS_PYTHON} is absent (scripts/peer-envs.sh builds it)")
    model, own = medharness_run
    export_task("lmms-eval", TASK, tmp_path / "task", limit=N)
    # lmms-eval's qwen2_vl model resizes images with its own pixel limits: the tiny processor's 112x112 here
    launch = ("import runpy, sys; from medharness.core.torchvision_shim import ensure_torchvision_importable "
              "as f; f(); sys.argv[0] = 'lmms_eval'; runpy.run_module('lmms_eval', run_name='__main__')")
    cmd = [str(LMMS_PYTHON), "-c", launch, "--model", "qwen2_vl", "--model_args",
           f"pretrained={model},device=cpu,device_map=cpu,max_pixels=12544,min_pixels=3136",
           "--include_path", str(tmp_path / "task"), "--tasks", f"medharness_{TASK}", "--batch_size", "1",
           "--log_samples", "--output_path", str(tmp_path / "out")]
    env = {**os.environ, **OFFLINE, "HF_HOME": str(tmp_path / "hf")}
    done = subprocess.run(cmd, check=False, env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    files = list((tmp_path / "out").glob(f"*/*_samples_medharness_{TASK}.jsonl"))
    assert len(files) == 1, done.stderr[-3000:]
    imported = import_predictions(ImportRequest(tool="lmms-eval", file=files[0], task=TASK,
                                                output=tmp_path / "run",
                                                id_map=tmp_path / "task" / "docs.jsonl"))
    _compare(imported, own)


def test_lm_eval_tasks_land_in_the_run(tmp_path: Path, medharness_run: tuple[Path, RunDir],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """`run --tasks phantom_presence,lm_eval:NAME`: lm-eval's (local, text multiple-choice) task on the same
    checkpoint lands beside the medharness task in one run directory and on one board."""
    pytest.importorskip("lm_eval", reason="the peers extra installs lm-eval")
    for key, value in {**OFFLINE, "HF_HOME": str(tmp_path / "hf")}.items():
        monkeypatch.setenv(key, value)
    import json

    from medharness.cli import main

    model, _ = medharness_run
    tasks = tmp_path / "lm_tasks"
    tasks.mkdir()
    docs = [{"question": "Which organ pumps blood?", "label": 0},
            {"question": "Which organ makes urine?", "label": 3},
            {"question": "Where does gas exchange happen?", "label": 2},
            {"question": "Which organ makes bile?", "label": 1}]
    (tasks / "organs.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (tasks / "organs.yaml").write_text(
        "task: medtiny_organs\ndataset_path: json\n"
        f"dataset_kwargs:\n  data_files: {tasks / 'organs.jsonl'}\ntest_split: train\n"
        "output_type: multiple_choice\ndoc_to_text: \"Question: {{question}}\\nAnswer:\"\n"
        "doc_to_choice: [heart, liver, lung, kidney]\ndoc_to_target: label\n"
        "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\nmetadata:\n  "
        "version: 1.0\n")
    out = tmp_path / "run"
    code = main(["run", "--model", str(model), "--backend", "hf", "--device", "cpu", "--dtype", "float32",
                 "--tasks", "phantom_presence,lm_eval:medtiny_organs", "--lm-eval-include-path", str(tasks),
                 "--limit", "4", "--output", str(out), "--no-cache", "--no-progress"])
    assert code == 0
    run = RunDir.open(out)
    assert (set(run.log.tasks) == {"phantom_presence", "lm_eval.medtiny_organs"}
            and run.log.status == "finished")
    entry = run.log.tasks["lm_eval.medtiny_organs"]
    assert entry.origin is not None and entry.origin.scored_by == "lm-eval" and entry.summary is not None
    rows = run.rows("lm_eval.medtiny_organs")
    assert len(rows) == len(docs)
    for row in rows:  # the recorded choice (highest log-likelihood) agrees with lm-eval's per-doc accuracy
        assert row.scores["acc"] == float(row.answer.value == row.sample.target)
        assert row.generation.text == row.sample.choices[row.answer.value]
    acc = entry.summary.metrics["acc"].value
    assert acc == pytest.approx(sum(r.scores["acc"] for r in rows) / len(rows))
    (results,) = (out / "lm_eval").glob("*/results_*.json")
    assert json.loads(results.read_text())["results"]["medtiny_organs"]["acc,none"] == pytest.approx(acc)
    assert main(["score", str(out)]) == 0  # the lm-eval task is left as lm-eval scored it
    board = tmp_path / "board.md"
    assert main(["leaderboard", str(out), "--output", str(board)]) == 0
    assert "lm_eval.medtiny_organs" in board.read_text()
