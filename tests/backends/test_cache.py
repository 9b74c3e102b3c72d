"""The response cache: a repeated run makes zero model calls; keys follow images, settings and seeds."""

from __future__ import annotations

import functools
import threading
from pathlib import Path

import pytest
from PIL import Image

from medharness.backends.cache import ResponseCache, cache_key
from medharness.core.records import Generation, GenerationSettings, Message, Part, Prompt
from medharness.runs.pipeline import RunConfig, Runner


def prompt(settings: GenerationSettings, text: str = "q") -> Prompt:
    parts = (Part(type="image", image="a.png"), Part(type="text", text=text))
    return Prompt(sample_id="1", messages=(Message(role="user", content=parts),), settings=settings)


def test_key_depends_on_pixels_model_text_and_sampling_seed() -> None:
    red, blue = Image.new("RGB", (4, 4), (255, 0, 0)), Image.new("RGB", (4, 4), (0, 0, 255))
    greedy = GenerationSettings(seed=1)
    base = cache_key("m", prompt(greedy), [red])
    assert base == cache_key("m", prompt(GenerationSettings(seed=2)), [red])  # greedy: seed irrelevant
    assert base != cache_key("m", prompt(greedy), [blue])
    assert base != cache_key("m2", prompt(greedy), [red])
    assert base != cache_key("m", prompt(greedy, "other"), [red])
    sampled = GenerationSettings(temperature=0.7, seed=1)
    assert (cache_key("m", prompt(sampled), [red])
            != cache_key("m", prompt(sampled.model_copy(update={"seed": 2})), [red]))


def test_failed_and_empty_generations_are_never_stored(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path)
    cache.put_many([("a", Generation(sample_id="1", text="yes")), ("b", Generation(sample_id="1", text=" ")),
                    ("c", Generation(sample_id="1", text="", error="timeout"))])
    assert set(cache.get_many(["a", "b", "c"])) == {"a"}
    assert (cache.hits, cache.misses) == (1, 2)


def test_second_identical_run_makes_zero_model_calls(tmp_path: Path, tiny_models: dict[str, Path]) -> None:
    def run(name: str, **kw: object):  # type: ignore[no-untyped-def]
        config = RunConfig(model=str(tiny_models["qwen2_vl"]), tasks="phantom_presence", limit=10,
                           max_new_tokens=6, cache_dir=str(tmp_path / "cache"), **kw)
        return Runner(config, output=tmp_path / name).run()

    first, second = run("a"), run("b")
    assert first.log.usage.model_calls == 10 and first.log.usage.cache.misses == 10
    texts = [r.generation.text for r in first.rows("phantom_presence")]
    empty = sum(not t.strip() for t in texts)  # a random model may stop at once: empty outputs are not cached
    assert empty < 10
    assert second.log.usage.model_calls == empty and second.log.usage.cache.hits == 10 - empty
    assert [r.generation.text for r in second.rows("phantom_presence")] == texts
    ablated = run("c", ablate="noise")  # other pixels (noise differs per sample): other prompts
    assert ablated.log.usage.model_calls == 10
    uncached = run("d", cache=False)
    assert uncached.log.usage.model_calls == 10 and uncached.log.usage.cache is None


def test_cost_only_where_a_price_entry_exists() -> None:
    from medharness.runs.prices import cost_usd

    assert cost_usd("gpt-4o-mini", 1_000_000, 1_000_000) == 0.75
    assert cost_usd("models/gemini-1.5-flash", 2_000_000, 0) == 0.15
    assert cost_usd("my-local-model", 10, 10) is None




def _open_and_write(folder: Path, start: threading.Barrier, i: int) -> int:
    start.wait()  # every thread opens the fresh file at the same moment
    cache = ResponseCache(folder, name="verdicts")
    cache.put_many([(f"k{i}", Generation(sample_id=str(i), text="yes"))])
    cache.close()
    return i


def test_caches_opened_at_once_on_a_fresh_file(tmp_path: Path) -> None:
    """Judges of one panel open the verdict cache in parallel threads: none may fail with 'database is
    locked'."""
    from concurrent.futures import ThreadPoolExecutor

    n = 12
    for round_ in range(20):
        folder = tmp_path / f"round{round_}"
        with ThreadPoolExecutor(max_workers=n) as pool:
            opened = pool.map(functools.partial(_open_and_write, folder, threading.Barrier(n)), range(n))
            assert sorted(opened) == list(range(n))
        reopened = ResponseCache(folder, name="verdicts")
        assert len(reopened.get_many([f"k{i}" for i in range(n)])) == n
        reopened.close()


def test_no_cache_no_hashing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a cache (`run --no-cache`) no cache key is computed (each hashes the request's images); with
    one, every request gets its key. The generations are the same either way."""
    from medharness.backends import generate
    from medharness.backends.base import Request

    class Echo:  # a cacheable stand-in backend: the reply is the question
        fingerprint, cacheable = "echo", True

        def generate(self, requests: list[Request]) -> list[Generation]:
            return [Generation(sample_id=r.prompt.sample_id, text=r.prompt.sample_id, model="echo")
                    for r in requests]

    prompts = [prompt(GenerationSettings(), f"q{i}").model_copy(update={"sample_id": f"s{i}"})
               for i in range(3)]
    requests = [Request(prompt=p) for p in prompts]
    computed: list[str] = []

    def counted(*args: object) -> str:
        computed.append(cache_key(*args))  # type: ignore[arg-type]
        return computed[-1]

    monkeypatch.setattr(generate, "cache_key", counted)
    off = generate.generate_cached(Echo(), requests, None)  # type: ignore[arg-type]
    assert computed == [] and [g.key for g in off] == [None] * 3
    on = generate.generate_cached(Echo(), requests, ResponseCache(tmp_path / "c.sqlite"))  # type: ignore[arg-type]
    assert len(computed) == 3 and [g.key for g in on] == computed
    assert [g.generation.text for g in off] == [g.generation.text for g in on] == ["s0", "s1", "s2"]
