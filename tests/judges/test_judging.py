"""Judge panels end to end: a finished run judged by scripted judges on a real local HTTP server
(tests/support/fake_api_server.py, 127.0.0.1), through the CLI: verdict files, panel columns, leaderboard,
agreement, disagreement file, verdict cache, faults; plus a real tiny hf model as a (noise) judge.
"""

from __future__ import annotations

import json
import re
import zlib
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("openai")
pytest.importorskip("krippendorff")

from fake_api_server import FakeAPIServer, Fault

from medharness.cli import main
from medharness.core.errors import ConfigError
from medharness.judges.panel import load_panel, parse_judges
from medharness.runs.pipeline import RunConfig, Runner
from medharness.runs.runlog import RunDir

N = 24
KEY_ENV, KEY = "MEDHARNESS_TEST_JUDGE_KEY", "sk-judge-SECRET-0123456789abcdef"
FAST = {"max_retries": 2, "retry_base_delay": 0.01, "retry_max_delay": 0.05, "timeout": 2}


def tag(text: str, name: str) -> str:
    match = re.search(rf"<{name}>\n(.*?)\n</{name}>", text, re.DOTALL)
    assert match, f"no <{name}> in the judge prompt"
    return match.group(1).strip()


def verdict(score: int, note: str = "ok") -> str:
    return json.dumps({"evaluation": note, "reasoning_score": score, "prediction_score": score})


def scripted(text: str, model: str) -> str:
    """strict: 1 iff the prediction is the gold; lenient: always 1; flaky: no JSON on every third sample."""
    gold, prediction = tag(text, "gold_answer").lower(), tag(text, "prediction").lower().strip(" .")
    if model in ("strict", "gpt-4o-mini"):
        return verdict(int(prediction == gold))
    if model == "lenient":
        return "```json\n" + verdict(1) + "\n```"
    if model == "flaky":
        return "I am fairly sure the answer is right." if zlib.crc32(text.encode()) % 3 == 0 else verdict(1)
    raise AssertionError(model)


@pytest.fixture(scope="module")
def server() -> Any:
    with FakeAPIServer(max_requests=2000, max_seconds=240, answer_by_model=scripted) as srv:
        yield srv


@pytest.fixture()
def finished_run(tmp_path: Path) -> RunDir:
    config = RunConfig(model="baseline:random", tasks="phantom_presence", limit=N, seed=3, cache=False)
    return Runner(config, output=tmp_path / "run").run()


def panel_file(tmp_path: Path, url: str, models: tuple[str, ...] = ("strict", "lenient", "flaky")) -> Path:
    lines = []
    for model in models:
        lines += [f"- name: {model}", "  spec: rarl_v1", "  backend: openai", f"  model: {model}",
                  f"  base_url: {url}/v1", f"  api_key_env: {KEY_ENV}", f"  options: {json.dumps(FAST)}"]
    path = tmp_path / "panel.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def judgements(run: RunDir) -> list[dict[str, Any]]:
    return [json.loads(x) for x in run.judgement_file("phantom_presence").read_text().splitlines()]


def test_panel_judges_a_finished_run(tmp_path: Path, server: FakeAPIServer, finished_run: RunDir,
                                     capsys: pytest.CaptureFixture[str],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)
    server.reset()
    cache = tmp_path / "cache"
    panel = panel_file(tmp_path, server.url)
    assert main(["judge", str(finished_run.path), "--judge-config", str(panel), "--cache-dir", str(cache),
                 "--no-progress"]) == 0
    assert len(server.requests) == 3 * N
    lines = judgements(finished_run)
    assert len(lines) == 3 * N
    rule = {r.sample_id: r.scores["yes_no_accuracy"] for r in finished_run.rows("phantom_presence")}
    assert 0 < sum(rule.values()) < N  # a random baseline: some right, some wrong
    for j in lines:
        assert j["spec"] == "rarl_v1" and len(j["prompt_hash"]) == 16 and j["settings"]["temperature"] == 0.0
        assert j["model"].startswith(f"openai:{j['judge']}@") and j["raw"]
        if j["judge"] == "strict":
            assert j["value"] == rule[j["sample_id"]] and not j["failed"]
        if j["judge"] == "flaky" and not j["raw"].startswith("{"):
            assert j["failed"] and j["value"] is None and j["values"] == {}  # unscored, never 0 or 1
    n_flaky_failed = sum(j["failed"] for j in lines if j["judge"] == "flaky")
    assert 0 < n_flaky_failed < N

    info = json.loads((finished_run.path / "run.json").read_text())
    columns = info["tasks"]["phantom_presence"]["judges"]["columns"]
    assert columns["judge:strict:prediction_score"]["value"] == pytest.approx(sum(rule.values()) / N)
    assert columns["judge:lenient:prediction_score"]["value"] == 1.0
    lenient = columns["judge:lenient:prediction_score"]  # 100%: a Wilson interval, never 1.0 +- 0.0
    assert (lenient["ci_method"], lenient["n_clusters"], lenient["ci_high"]) == ("wilson", N, 1.0)
    assert 0.5 < lenient["ci_low"] < 1.0
    flaky = columns["judge:flaky:prediction_score"]
    assert (flaky["value"], flaky["n"], flaky["n_failed"]) == (1.0, N - n_flaky_failed, n_flaky_failed)
    # majority of strict/lenient/flaky: 1 unless strict says 0 and flaky failed (a 1-1 tie: unscored)
    majority = columns["panel:rarl_v1:prediction_score:majority"]
    flaky_failed = {j["sample_id"] for j in lines if j["judge"] == "flaky" and j["failed"]}
    ties = sum(1 for sid, v in rule.items() if v == 0 and sid in flaky_failed)
    assert majority["n"] == N - ties and majority["value"] == 1.0
    assert info["tasks"]["phantom_presence"]["summary"]["metrics"]["yes_no_accuracy"]  # rule metric untouched
    assert info["judges"]["strict"]["usage"]["calls"] == N and info["judges"]["strict"]["prompt_hash"]
    assert info["judges"]["strict"]["api_key_env"] == KEY_ENV
    assert all(r.headers["authorization"] == f"Bearer {KEY}" for r in server.requests)  # the key was sent ...
    written = "".join(p.read_text() for p in finished_run.path.rglob("*") if p.is_file())
    out = capsys.readouterr().out
    assert "SECRET" not in written and "SECRET" not in out  # ... and never written

    disagreements = (finished_run.path / "judgements" / "disagreements.md").read_text()
    wrong = [sid for sid, v in rule.items() if v == 0]
    for sid in wrong:  # lenient says 1 where the rule says 0
        assert f"phantom_presence / {sid}:" in disagreements
    assert "judge:strict:prediction_score" in out and "disagreeing sample" in out

    # the leaderboard shows judge and panel columns beside the rule-based metric
    assert main(["leaderboard", str(finished_run.path)]) == 0
    board = capsys.readouterr().out
    assert ("phantom_presence · yes_no_accuracy" in board
            and "phantom_presence · judge:strict:prediction_score" in board)
    assert "panel:rarl_v1:prediction_score:mean" in board and "judge:strict:reasoning_score" not in board

    # judging again costs nothing but the failed verdicts, which are retried
    server.reset()
    assert main(["judge", str(finished_run.path), "--judge-config", str(panel), "--cache-dir", str(cache),
                 "--no-progress"]) == 0
    assert len(server.requests) == n_flaky_failed
    # a copy of the run without its verdicts is re-judged from the verdict cache (failures again retried)
    server.reset()
    (finished_run.path / "judgements" / "phantom_presence.jsonl").unlink()
    assert main(["judge", str(finished_run.path), "--judge-config", str(panel), "--cache-dir", str(cache),
                 "--no-progress"]) == 0
    assert len(server.requests) == n_flaky_failed
    assert sum(j["cached"] for j in judgements(finished_run)) == 3 * N - n_flaky_failed


def test_agreement_report(tmp_path: Path, server: FakeAPIServer, finished_run: RunDir,
                          capsys: pytest.CaptureFixture[str]) -> None:
    panel = panel_file(tmp_path, server.url, ("strict", "lenient"))
    assert main(["judge", str(finished_run.path), "--judge-config", str(panel), "--no-cache",
                 "--no-progress"]) == 0
    rule = {r.sample_id: r.scores["yes_no_accuracy"] for r in finished_run.rows("phantom_presence")}
    human = tmp_path / "human.csv"
    human.write_text("id,label\n" + "".join(f"{sid},{'yes' if v else 'no'}\n" for sid, v in rule.items()))
    capsys.readouterr()
    assert main(["agreement", str(finished_run.path), "--json", "--bootstrap", "200",
                 "--human", str(human)]) == 0
    [report] = json.loads(capsys.readouterr().out)
    share_right = sum(rule.values()) / N
    assert report["judges"] == ["lenient", "strict"] and report["field"] == "prediction_score"
    [pair] = report["pairwise"]
    # they agree where the rule says 1
    assert pair["percent_agreement"]["value"] == pytest.approx(share_right)
    assert pair["cohen_kappa"]["value"] == pytest.approx(0.0)  # lenient never varies
    strict_vs_rule = next(r for r in report["vs_rule"] if r["rater"] == "strict")
    assert (strict_vs_rule["percent_agreement"]["value"] == 1.0
            and strict_vs_rule["cohen_kappa"]["value"] == 1.0)
    ci = strict_vs_rule["cohen_kappa"]
    assert ci["low"] <= ci["value"] <= ci["high"]
    strict_vs_human = next(r for r in report["vs_human"] if r["rater"] == "strict")
    assert strict_vs_human["icc"]["value"] == pytest.approx(1.0) and report["n_human"] == N
    # bad human labels: a clear error naming the file and the problem, nothing written
    for body, message in (("sample,label\nx,1\n", "missing column(s) ['id']"),
                          ("id,label\npresence-00000,maybe\n",
                           "human.csv:2: label 'maybe' is not a number or yes/no"),
                          ("id,label\npresence-00000,3\n", "values [3.0] are not rarl_v1 verdicts")):
        human.write_text(body)
        assert main(["agreement", str(finished_run.path), "--human", str(human), "--bootstrap", "10"]) == 2
        assert message in capsys.readouterr().err
    assert main(["agreement", str(finished_run.path), "--bootstrap", "50"]) == 0
    text = capsys.readouterr().out
    assert "## phantom_presence · rarl_v1 (lenient, strict)" in text and "Fleiss" in text


def test_run_judges_inline_with_cost(tmp_path: Path, server: FakeAPIServer) -> None:
    pytest.importorskip("google.genai")
    out = tmp_path / "run"
    gemini = tmp_path / "gemini.yaml"  # a Gemini judge through google-genai, beside the shorthand ones
    gemini.write_text(f"- {{name: gemini-strict, spec: rarl_v1, backend: gemini, model: strict, "
                      f"base_url: '{server.url}', options: {json.dumps(FAST)}}}\n")
    assert main(["run", "--model", "baseline:majority", "--tasks", "phantom_presence", "--limit", "6",
                 "--output", str(out), "--no-cache", "--no-progress",
                 "--judges", "rarl_v1:openai:gpt-4o-mini,equivalence_v1:openai:lenient",
                 "--judge-base-url", f"{server.url}/v1", "--judge-config", str(gemini)]) == 0
    info = json.loads((out / "run.json").read_text())
    rule = [r.scores["yes_no_accuracy"] for r in RunDir.open(out).rows("phantom_presence")]
    columns = info["tasks"]["phantom_presence"]["judges"]["columns"]
    assert columns["judge:gemini-strict:prediction_score"]["value"] == pytest.approx(sum(rule) / len(rule))
    assert info["judges"]["gemini-strict"]["model_versions"] == ["strict"]
    member = info["judges"]["rarl_v1-openai-gpt-4o-mini"]
    assert member["usage"]["prompt_tokens"] > 0 and member["usage"]["cost_usd"] > 0
    assert member["model_versions"] == ["gpt-4o-mini"]  # what the server said answered
    # `lenient` answers in rarl_v1's format to an equivalence_v1 prompt: no valid verdict, so unscored
    lenient = (info["tasks"]["phantom_presence"]["judges"]["columns"]
               ["judge:equivalence_v1-openai-lenient:equivalent"])
    assert (lenient["value"], lenient["n"], lenient["n_failed"]) == (None, 0, 6)


def test_judge_faults_never_become_scores(tmp_path: Path, server: FakeAPIServer,
                                          finished_run: RunDir) -> None:
    server.reset()
    server.script(Fault.http(429, retry_after="0.05"), Fault.timeout(3), Fault.malformed(), Fault.truncated(),
                  match="")
    panel = panel_file(tmp_path, server.url, ("strict",))
    assert main(["judge", str(finished_run.path), "--judge-config", str(panel), "--no-cache",
                 "--no-progress"]) == 0
    lines = judgements(finished_run)
    assert len(lines) == N and not any(j["failed"] for j in lines)  # retried to success
    # a judge whose every call fails: all unscored and flagged, the run's scores untouched
    dead = tmp_path / "dead.yaml"
    dead.write_text("- name: dead\n  spec: rarl_v1\n  backend: openai\n  model: strict\n"
                    "  base_url: http://127.0.0.1:9/v1\n  options: "
                    f"{json.dumps({**FAST, 'max_retries': 0})}\n")
    assert main(["judge", str(finished_run.path), "--judge-config", str(dead), "--no-cache",
                 "--no-progress"]) == 0
    dead_lines = [j for j in judgements(finished_run) if j["judge"] == "dead"]
    assert len(dead_lines) == N and all(j["failed"] and j["value"] is None for j in dead_lines)
    assert all("judge call failed" in j["note"] for j in dead_lines)
    info = json.loads((finished_run.path / "run.json").read_text())
    assert (info["tasks"]["phantom_presence"]["judges"]["columns"]["judge:dead:prediction_score"]["value"]
            is None)


def test_torn_judgement_line_is_repaired(tmp_path: Path, server: FakeAPIServer, finished_run: RunDir) -> None:
    panel = panel_file(tmp_path, server.url, ("strict",))
    assert main(["judge", str(finished_run.path), "--judge-config", str(panel), "--no-cache",
                 "--no-progress"]) == 0
    file = finished_run.judgement_file("phantom_presence")
    lines = file.read_text().splitlines(keepends=True)
    file.write_text("".join(lines[:-3]) + lines[-3][:40])  # killed mid-write
    assert len(finished_run.judgements("phantom_presence")) == N - 3
    server.reset()
    assert main(["judge", str(finished_run.path), "--judge-config", str(panel), "--no-cache",
                 "--no-progress"]) == 0
    assert len(server.requests) == 3 and len(judgements(finished_run)) == N


def test_panel_config_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("- name: a\n  spec: rarl_v1\n  backend: openai\n  model: m\n  colour: red\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:5: judge 1 \(a\): colour: Extra inputs"):
        load_panel(bad)
    bad.write_text("judges:\n  - {name: a, spec: rarl_v1x, backend: openai, model: m}\n")
    with pytest.raises(ConfigError, match="Did you mean 'rarl_v1'"):
        load_panel(bad)
    bad.write_text("- {name: a, spec: rarl_v1, backend: openai, model: m}\n- {name: a, spec: rarl_v1, "
                   "backend: gemini, model: m}\n")
    with pytest.raises(ConfigError, match="two judges are named 'a'"):
        load_panel(bad)
    with pytest.raises(ConfigError, match="judge backend 'replay'"):
        parse_judges("rarl_v1:replay:x")
    with pytest.raises(ConfigError, match="SPEC:BACKEND:MODEL"):
        parse_judges("rarl_v1:openai")
    [member] = parse_judges("quality_1to10_v1:vllm:/ckpt/Qwen2-VL-2B")
    assert member.name == "quality_1to10_v1-vllm-Qwen2-VL-2B" and member.base_url is None
    assert main(["judge", str(tmp_path), "--judges", "rarl_v1:openai:m"]) == 2  # not a run directory


def test_real_tiny_hf_judge_is_unscored_noise(tmp_path: Path, tiny_models: dict[str, Path],
                                              finished_run: RunDir) -> None:
    """A real (random-weight) model as judge: its replies are noise, so every verdict is unscored."""
    judges = f"semantic_v1:hf:{tiny_models['qwen2_vl']},rarl_v1:hf:{tiny_models['qwen2_vl']}"
    assert main(["judge", str(finished_run.path), "--judges", judges, "--no-cache", "--no-progress"]) == 0
    lines = judgements(finished_run)
    rarl = [j for j in lines if j["spec"] == "rarl_v1"]
    assert len(rarl) == N and all(j["failed"] and j["value"] is None and j["raw"] for j in rarl)
    # the baseline's answers have no <think> text: nothing for semantic_v1 to judge (skipped, no model call)
    semantic = [j for j in lines if j["spec"] == "semantic_v1"]
    assert len(semantic) == N and all(not j["failed"] and j["value"] is None and j["raw"] == ""
                                      for j in semantic)


def test_judge_items_needs_no_run_directory(tmp_path: Path, server: FakeAPIServer,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The directory-free core a training reward calls: completions that live in no run."""
    from medharness.backends.cache import ResponseCache
    from medharness.judges.judging import JudgeItem, MemberUsage, judge_items, make_judge_backend
    from medharness.judges.specs import JudgeInput

    monkeypatch.setenv(KEY_ENV, KEY)
    server.reset()
    member = load_panel(panel_file(tmp_path, server.url, ("strict",)))[0]
    backend = make_judge_backend(member)
    items = [JudgeItem("phantom_presence", "c1",
                       JudgeInput(question="Lesion?", gold="yes", prediction="yes")),
             JudgeItem("phantom_presence", "c2", JudgeInput(question="Lesion?", gold="yes", prediction="no")),
             JudgeItem("phantom_presence", "c3", None)]
    cache = ResponseCache(tmp_path / "cache", name="verdicts")
    usage = MemberUsage()
    first = judge_items(member.judge_spec, backend, items, "strict", cache, usage)
    assert [j.value for j in first] == [1.0, 0.0, None] and [j.sample_id for j in first] == ["c1", "c2", "c3"]
    assert not first[2].failed and "nothing to judge" in first[2].note and usage.skipped == 1
    assert len(server.requests) == 2 and usage.calls == 2
    again = judge_items(member.judge_spec, backend, items, "strict", cache, usage)
    assert [j.value for j in again] == [1.0, 0.0, None] and all(j.cached for j in again[:2])
    assert len(server.requests) == 2 and usage.cache_hits == 2
    cache.close()
    backend.close()
