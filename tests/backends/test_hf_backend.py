"""The `hf` backend and `build_tiny_vlm` on real tiny Qwen2-VL / Qwen2.5-VL checkpoints (no mocks)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from medharness.core.torchvision_shim import ensure_torchvision_importable

pytest.importorskip("transformers")
ensure_torchvision_importable()
pytest.importorskip("torchvision")

import torch
from chat_requests import GREEDY, mixed_requests, request, truncated_png
from PIL import Image
from safetensors.torch import load_file

from medharness.backends import BACKENDS, Request
from medharness.backends.hf import HFBackend, weights_fingerprint
from medharness.checkpoints.tiny import ARCHS, TAG_TOKENS, build_tiny_vlm
from medharness.core.records import GenerationSettings

pytestmark = pytest.mark.slow

MAX_NEW = GREEDY.max_new_tokens






@pytest.fixture(scope="module", params=ARCHS)
def arch(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def hf(tiny_models: dict[str, Path], arch: str) -> Iterator[HFBackend]:
    backend = BACKENDS.get("hf")(str(tiny_models[arch]), device="cpu", batch_size=8)
    yield backend
    backend.close()


# -- build_tiny_vlm ---------------------------------------------------------------------------------------

def test_build_is_deterministic_per_seed(tmp_path: Path, arch: str) -> None:
    a, b, c = (build_tiny_vlm(tmp_path / name, arch=arch, seed=seed)
               for name, seed in (("a", 0), ("b", 0), ("c", 1)))
    assert a == tmp_path / "a"
    sa, sb, sc = (load_file(p / "model.safetensors") for p in (a, b, c))
    assert sa.keys() == sb.keys() == sc.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)
    assert (a / "tokenizer.json").read_bytes() == (b / "tokenizer.json").read_bytes()


def test_tiny_folder_reloads_offline(tiny_models: dict[str, Path], arch: str) -> None:
    from transformers import AutoModelForImageTextToText, AutoProcessor

    path = tiny_models[arch]
    processor = AutoProcessor.from_pretrained(path, local_files_only=True)
    model = AutoModelForImageTextToText.from_pretrained(path, local_files_only=True)
    assert model.config.model_type == arch
    tok = processor.tokenizer
    assert model.get_input_embeddings().weight.shape[0] == len(tok)
    assert model.config.image_token_id == tok.convert_tokens_to_ids("<|image_pad|>")
    for tag in TAG_TOKENS:
        assert len(tok.encode(tag, add_special_tokens=False)) == 1
    assert sum(p.numel() for p in model.parameters()) < 300_000
    # min 56x56 / max 112x112 pixels, 2x2 patches merged per token
    for side, n_tokens in ((20, 4), (2000, 16)):
        grid = processor(text=["<|vision_start|><|image_pad|><|vision_end|>"],
                         images=[Image.new("RGB", (side, side))], return_tensors="pt")["image_grid_thw"]
        assert int(grid.prod()) // 4 == n_tokens
    assert "<|im_start|>assistant" in processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "text", "text": "hi"}]}], tokenize=False,
        add_generation_prompt=True)


def _grid_step_angles(model: torch.nn.Module) -> tuple[float, float]:
    """The largest rotation (rad, over the head's frequencies) that one step right and one step down in a
    grid of image tokens adds in the text model's M-RoPE (positions: temporal, height, width)."""
    rotary = model.model.language_model.rotary_emb
    # (t/h/w, batch 1, 3 tokens): here, one step right, one step down
    at = torch.tensor([[[5, 5, 5]], [[5, 5, 6]], [[5, 6, 5]]]).permute(2, 1, 0)
    dummy = torch.zeros(1, 3, model.config.text_config.hidden_size)
    cos, sin = rotary(dummy, at)
    angle = torch.atan2(sin[0], cos[0])  # (3 positions, head dim)

    def largest(step: torch.Tensor) -> float:  # wrapped to [-pi, pi]
        return float(torch.remainder(step + torch.pi, 2 * torch.pi).sub(torch.pi).abs().max())

    return largest(angle[1] - angle[0]), largest(angle[2] - angle[0])


def test_grid_rope_tells_image_tokens_apart_by_place(tmp_path: Path, arch: str) -> None:
    """Qwen2-VL's own rope turns a neighbouring image token by under 0.04 rad (a tiny text model cannot tell
    where a lesion is); `rope="grid"` by over 0.3 in both directions, with the same weights."""
    from transformers import AutoModelForImageTextToText

    qwen, grid = (build_tiny_vlm(tmp_path / rope, arch=arch, size="small", rope=rope)
                  for rope in ("qwen", "grid"))
    sq, sg = (load_file(p / "model.safetensors") for p in (qwen, grid))
    assert sq.keys() == sg.keys() and all(torch.equal(sq[k], sg[k]) for k in sq)
    models = [AutoModelForImageTextToText.from_pretrained(p, local_files_only=True) for p in (qwen, grid)]
    assert models[1].config.text_config.rope_parameters["mrope_section"] == [2, 7, 7]
    right, down = _grid_step_angles(models[0])
    assert 0 < right < 0.001 and 0.01 < down < 0.04
    right, down = _grid_step_angles(models[1])
    assert right > 0.3 and down > 0.3


def test_unknown_arch_refused(tmp_path: Path) -> None:
    from medharness.core.errors import ConfigError

    with pytest.raises(ConfigError, match="qwen2_vl"):
        build_tiny_vlm(tmp_path, arch="llava")
    with pytest.raises(ConfigError, match="grid"):
        build_tiny_vlm(tmp_path, rope="alibi")


# -- HFBackend --------------------------------------------------------------------------------------------

def test_batched_greedy_equals_one_at_a_time(hf: HFBackend) -> None:
    requests = mixed_requests()
    batched = hf.generate(requests)
    single = [hf.generate([r])[0] for r in requests]
    assert [g.sample_id for g in batched] == [r.prompt.sample_id for r in requests]
    for b, s in zip(batched, single):
        assert b.error is None and isinstance(b.text, str) and b.text
        assert 1 <= b.completion_tokens <= MAX_NEW
        assert b.finish_reason in ("stop", "length")
        assert b.model == hf.fingerprint
    # Left padding must not change anything: same text, token counts (padding excluded) and finish reason.
    assert [b.model_dump() for b in batched] == [s.model_dump() for s in single]
    assert len({g.prompt_tokens for g in batched}) >= 4  # the prompts really differ in length


def test_greedy_is_deterministic_across_calls(hf: HFBackend) -> None:
    requests = mixed_requests()
    assert hf.generate(requests) == hf.generate(requests)


def test_sampling_is_seeded(hf: HFBackend) -> None:
    requests = mixed_requests(GenerationSettings(max_new_tokens=MAX_NEW, temperature=1.0, top_p=0.9, seed=7))
    first, again = hf.generate(requests), hf.generate(requests)
    assert [g.text for g in first] == [g.text for g in again]
    assert all(g.error is None and g.completion_tokens <= MAX_NEW for g in first)


def test_mixed_settings_are_grouped_and_kept_in_order(hf: HFBackend) -> None:
    short, long = GenerationSettings(max_new_tokens=3), GenerationSettings(max_new_tokens=9)
    requests = [r for pair in zip(mixed_requests(short), mixed_requests(long)) for r in pair]
    out = hf.generate(requests)
    assert [g.sample_id for g in out] == [r.prompt.sample_id for r in requests]
    for req, gen in zip(requests, out):
        assert gen.completion_tokens <= req.prompt.settings.max_new_tokens
    assert out == [hf.generate([r])[0] for r in requests]


def test_batch_size_does_not_change_answers(hf: HFBackend, tiny_models: dict[str, Path], arch: str) -> None:
    requests = mixed_requests(GenerationSettings(max_new_tokens=5)) + mixed_requests()
    small = HFBackend(str(tiny_models[arch]), device="cpu", batch_size=3)
    assert small.generate(requests) == hf.generate(requests)
    small.close()


def test_broken_image_fails_only_its_sample(hf: HFBackend) -> None:
    good = mixed_requests()
    broken = [request("aspect", "What is shown?", [Image.new("RGB", (1, 300))]),  # aspect ratio > 200
              request("truncated", "What is shown?", [truncated_png()]),
              Request(prompt=request("count", "Two images", [Image.new("RGB", (60, 60))] * 2).prompt,
                      images=[])]
    requests = [good[0], broken[0], good[1], broken[1], good[4], broken[2]]
    out = hf.generate(requests)
    assert [g.sample_id for g in out] == [r.prompt.sample_id for r in requests]
    by_id = {g.sample_id: g for g in out}
    assert "aspect ratio" in by_id["aspect"].error
    assert "truncated" in by_id["truncated"].error
    assert "2 image parts but 0 images" in by_id["count"].error
    assert all(by_id[s].text == "" for s in ("aspect", "truncated", "count"))
    assert [by_id[r.prompt.sample_id] for r in (good[0], good[1], good[4])] == \
        [hf.generate([r])[0] for r in (good[0], good[1], good[4])]


def biased(path: Path, tokens: list[str]) -> HFBackend:
    """A backend whose model is pushed (+1e4 logit bias) towards emitting `tokens`."""
    backend = HFBackend(str(path), device="cpu")
    head = backend.net.get_output_embeddings()
    bias = torch.zeros(head.weight.shape[0])
    bias[backend.tokenizer.convert_tokens_to_ids(tokens)] = 1e4
    head.bias = torch.nn.Parameter(bias)
    return backend


def test_vision_tokens_are_suppressed(hf: HFBackend, tiny_models: dict[str, Path], arch: str) -> None:
    """Even a model that prefers vision placeholders never emits them: with those ids masked out, greedy
    decoding picks exactly what the unbiased model picks."""
    backend = biased(tiny_models[arch],
                     ["<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>"])
    requests = mixed_requests()
    assert backend.generate(requests) == hf.generate(requests)
    backend.close()


def test_stop_at_eos(tiny_models: dict[str, Path], arch: str) -> None:
    """A model pushed to emit <|im_end|> at once stops: finish "stop", one completion token, empty text."""
    backend = biased(tiny_models[arch], ["<|im_end|>"])
    out = backend.generate(mixed_requests())
    assert [(g.text, g.finish_reason, g.completion_tokens) for g in out] == [("", "stop", 1)] * 5
    backend.close()


def test_fingerprint_is_stable_and_tracks_weights(tmp_path: Path) -> None:
    path = build_tiny_vlm(tmp_path / "m", arch="qwen2_vl", seed=0)
    first = HFBackend(str(path), device="cpu").fingerprint
    assert re.fullmatch(rf"hf:{re.escape(str(path.resolve()))}@[0-9a-f]{{12}}", first)
    assert HFBackend(str(path), device="cpu").fingerprint == first
    assert first.endswith(weights_fingerprint(path))
    build_tiny_vlm(path, arch="qwen2_vl", seed=1)  # same files, same sizes, new weights
    assert HFBackend(str(path), device="cpu").fingerprint != first
