"""`judge_score`: a judge panel's verdict as a metric and an async training reward.

Faults are injected with the scripted local HTTP server (tests/support/fake_api_server.py); the real path is a
real (random-weight) tiny hf model as the judge, whose replies are noise and so always unscored (None, never
0).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("openai")

from fake_api_server import FakeAPIServer, Fault

from medharness.cli import main
from medharness.core.records import Answer, Sample
from medharness.scoring.metrics import METRICS
from medharness.taskfiles.task import load_task
from medharness.trainers.rewards import RewardSet
from medharness.trainers.schema import RewardSpec

KEY_ENV = "MEDHARNESS_TEST_JUDGE_KEY"
FAST = {"max_retries": 1, "retry_base_delay": 0.01, "retry_max_delay": 0.02, "timeout": 2}
SAMPLE = Sample(task="phantom_presence", id="s1", question="Is there a lesion?", target="yes")


def scripted(text: str, model: str) -> str:
    """yes / no: that verdict; prose: no JSON (unscored); quality: a 1-10 score from the reasoning's
    length."""
    if model == "yes":
        return '{"coherent": "Yes"}'
    if model == "no":
        return '{"coherent": "No"}'
    if model == "prose":
        return "The reasoning looks coherent to me."
    raise AssertionError(model)


@pytest.fixture(scope="module")
def server() -> Iterator[FakeAPIServer]:
    with FakeAPIServer(max_requests=500, max_seconds=240, answer_by_model=scripted) as srv:
        yield srv


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv(KEY_ENV, "sk-test")
    yield
    from medharness.judges.metrics import close_backends

    close_backends()


def panel(tmp_path: Path, url: str, *models: str) -> str:
    entries = [{"name": m, "spec": "semantic_v1", "backend": "openai", "model": m, "base_url": f"{url}/v1",
                "api_key_env": KEY_ENV, "options": FAST} for m in models]
    path = tmp_path / f"panel-{'-'.join(models)}.yaml"
    path.write_text(json.dumps(entries))  # JSON is YAML
    return str(path)


def judge(text: str, **args: Any) -> float | None:
    fn = METRICS.get("judge_score").fn
    assert fn is not None
    return fn(Answer(value="yes"), SAMPLE, text, **args)


THINK = "<think>a bright round spot, so a lesion</think><answer>yes</answer>"


def test_registered_from_outside_the_core_through_the_entry_point() -> None:
    """The core's registry finds judge_score on its first miss; importing the core imports no judges
    module."""
    code = ("import sys; from medharness.scoring.metrics import METRICS; "
            "before = any(m.startswith('medharness.judges') for m in sys.modules); "
            "m = METRICS.get('judge_score'); "
            "print(before, m.batch is not None, 'medharness.judges.metrics' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["False", "True", "True"]


def test_verdicts_and_the_unscored_path(tmp_path: Path, server: FakeAPIServer) -> None:
    cache = str(tmp_path / "cache")
    assert judge(THINK, panel=panel(tmp_path, server.url, "yes"), cache_dir=cache) == 1.0
    assert judge(THINK, panel=panel(tmp_path, server.url, "no"), cache_dir=cache) == 0.0
    # unscored, never 0
    assert judge(THINK, panel=panel(tmp_path, server.url, "prose"), cache_dir=cache) is None
    server.reset()
    server.script(Fault.http(500), Fault.http(500), match="bright round spot")
    assert judge(THINK, panel=panel(tmp_path, server.url, "yes"), cache=False) is None  # failed after retries
    assert len(server.requests) == 2
    server.reset()
    # no <think>: no call
    assert judge("yes", panel=panel(tmp_path, server.url, "yes"), cache_dir=cache) is None
    assert judge("<think>unclosed", panel=panel(tmp_path, server.url, "yes"), cache_dir=cache) is None
    assert server.requests == []


def test_verdict_cache_and_panel_mean(tmp_path: Path, server: FakeAPIServer) -> None:
    cache = str(tmp_path / "cache")
    server.reset()
    two = panel(tmp_path, server.url, "yes", "no")
    assert judge(THINK, panel=two, cache_dir=cache) == 0.5  # the mean of the members that scored
    assert len(server.requests) == 2
    assert judge(THINK, panel=two, cache_dir=cache) == 0.5
    assert len(server.requests) == 2  # both verdicts came from the cache
    three = panel(tmp_path, server.url, "yes", "no", "prose")
    assert judge(THINK, panel=three, cache_dir=cache) == 0.5  # the unscored member is left out, not counted 0
    with pytest.raises(Exception, match="field"):
        judge(THINK, panel=two, field="reasoning_score", cache=False)


def test_requires_a_meta_field(tmp_path: Path, server: FakeAPIServer) -> None:
    """RARL's reasoning reward: None where the sample has no annotated reasoning (and no judge call)."""
    server.reset()
    fn = METRICS.get("judge_score").batch
    assert fn is not None
    with_reasoning = SAMPLE.model_copy(update={"meta": {"reasoning": "a lesion is visible"}})
    values = fn([(Answer(value="yes"), SAMPLE, THINK), (Answer(value="yes"), with_reasoning, THINK)],
                panel=panel(tmp_path, server.url, "yes"), requires="reasoning", cache=False)
    assert values == [None, 1.0] and len(server.requests) == 1


def test_async_training_reward(tmp_path: Path, server: FakeAPIServer) -> None:
    """In a RewardSet the judge component is an async TRL reward; completions.jsonl gets every component."""
    server.reset()
    task = load_task("phantom_presence", {"prompt": "r1"})
    samples = task.load_samples("train")[:2]
    specs = [RewardSpec(metric="yes_no_accuracy", weight=1.0),
             RewardSpec.model_validate({"metric": "judge_score", "weight": 0.5, "as": "semantic",
                                        "args": {"panel": panel(tmp_path, server.url, "yes"),
                                                 "cache": False}})]
    log = tmp_path / "completions.jsonl"
    rewards = RewardSet(task, "r1", specs, samples, completions_file=log)
    plain, semantic, total = rewards.functions()
    assert not asyncio.iscoroutinefunction(plain) and asyncio.iscoroutinefunction(semantic)
    assert asyncio.iscoroutinefunction(total) and rewards.trl_weights() == [0.0, 0.0, 1.0]
    texts = [[{"role": "assistant", "content": f"<think>spot</think><answer>{samples[0].target}</answer>"}],
             [{"role": "assistant", "content": "no think at all"}]]
    ids = [samples[0].id, samples[1].id]
    assert plain(completions=texts, sample_id=ids) == [1.0, 0.0]
    assert not log.exists()  # written once every component has scored the batch
    assert asyncio.run(semantic(completions=texts, sample_id=ids)) == [1.0, None]
    assert asyncio.run(total(completions=texts, sample_id=ids)) == pytest.approx([1.5, 0.0])
    assert len(server.requests) == 1  # the judge is asked once for the batch, whichever function asks
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["rewards"] for r in rows] == [{"yes_no_accuracy": 1.0, "semantic": 1.0},
                                           {"yes_no_accuracy": 0.0, "semantic": None}]
    assert rows[0]["total"] == pytest.approx(1.5) and rows[1]["total"] == 0.0
    gold_means = rewards.check_applicable(samples, lambda s: f"<think>t</think><answer>{s.target}</answer>")
    assert gold_means == {"yes_no_accuracy": 1.0, "semantic": None}  # the judge is not paid for gold answers


def test_reward_command_with_a_judge(tmp_path: Path, server: FakeAPIServer,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    task = load_task("phantom_presence")
    sid = task.load_samples("test")[0].id
    completions = tmp_path / "c.txt"
    completions.write_text("<think>a spot</think><answer>yes</answer>\nno reasoning\n")
    rewards = json.dumps([{"metric": "judge_score", "args": {"panel": panel(tmp_path, server.url, "no"),
                                                              "cache": False}},
                          {"metric": "rarl_format"}])
    assert main(["reward", "--task", "phantom_presence", "--prompt", "r1", "--completions", str(completions),
                 "--sample-id", sid, "--rewards", rewards, "--json"]) == 0
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [r["rewards"] for r in rows] == [{"judge_score": 0.0, "rarl_format": 1.0},
                                           {"judge_score": None, "rarl_format": 0.0}]


def test_real_tiny_hf_judge_is_unscored(tiny_models: dict[str, Path]) -> None:
    """A real model behind the hf backend: a random-weight one replies noise, so the reward is None."""
    value = judge(THINK, judges=f"semantic_v1:hf:{tiny_models['qwen2_vl']}", cache=False)
    assert value is None


def test_shipped_rarl_panel_config() -> None:
    """The panel users run for RARL's evaluation: GPT-4o mini and Gemini 1.5 Flash, rarl_v2 (Appendix B)."""
    from medharness.judges.panel import load_panel

    path = Path(__file__).resolve().parents[2] / "trainers" / "sweeps" / "panels" / "rarl_judges.yaml"
    members = load_panel(path)
    assert [(m.spec, m.backend, m.model) for m in members] == [("rarl_v2", "openai", "gpt-4o-mini"),
                                                                ("rarl_v2", "gemini", "gemini-1.5-flash")]
