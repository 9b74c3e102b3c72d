"""The learning check: SFT of the small tiny model on phantom_presence reads the scan, and only the scan.

It guards the image path, the label path and the training loop of every change: the real trainer (TRL's
SFTTrainer through `medharness train` with the shipped presets) and the real evaluation (`medharness run` on
the task's 200 test scans). The same check with blank training images, or with each sample given another
sample's answer, must stay at chance: it shows the check can fail. A LoRA adapter (the `tiny_lora` overlay)
learns too. bench/learning.py measures the full
protocol (3 seeds, every recipe, intervals); docs/benchmarks.md has its figures.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medharness.checkpoints.tiny import build_tiny_vlm
from medharness.cli import main
from medharness.trainers.run import TrainRequest, train

pytestmark = pytest.mark.slow
pytest.importorskip("trl")

STEPS = 300  # of the tiny_learn preset's 600: the check stays within a minute of training on 2 cores


@pytest.fixture(scope="module")
def small_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_vlm(tmp_path_factory.mktemp("small") / "model", size="small", seed=0)


def balanced_accuracy(run_dir: Path) -> float:
    """Mean over the gold answers of the share scored right (the run's own sample rows): 0.5 at chance."""
    by_gold: dict[str, list[float]] = {}
    for line in (run_dir / "samples" / "phantom_presence.jsonl").read_text().splitlines():
        row = json.loads(line)
        by_gold.setdefault(row["sample"]["target"], []).append(row["scores"]["yes_no_accuracy"] or 0.0)
    assert set(by_gold) == {"yes", "no"}
    return sum(sum(v) / len(v) for v in by_gold.values()) / len(by_gold)


SFT = ["sft", "tiny_cpu", "tiny_learn"]
LORA = ["sft_lora", "tiny_cpu", "tiny_learn", "tiny_lora"]  # an adapter on every linear layer


@pytest.mark.parametrize(("presets", "ablate", "learns"), [(SFT, None, True), (SFT, "blank", False),
                                                           (SFT, "labels", False), (LORA, None, True)],
                         ids=["sft", "sft-blank-images", "sft-shuffled-labels", "sft-lora"])
def test_sft_learns_the_scan_and_only_from_the_scan(tmp_path: Path, small_model: Path, presets: list[str],
                                                     ablate: str | None, learns: bool) -> None:
    out = tmp_path / "sft"
    overrides = [f"trl.max_steps={STEPS}", "trl.save_steps=100000", *([f"ablate={ablate}"] if ablate else [])]
    train(TrainRequest(presets=presets, task="phantom_presence", model=str(small_model), output=out,
                       overrides=overrides), progress=print)
    if presets == LORA:
        assert (out / "final" / "adapter_config.json").is_file()  # the harness scores the adapter itself
    card = (out / "final" / "README.md").read_text()
    assert ("A control run" in card) == (ablate is not None)
    code = main(["run", "--model", str(out / "final"), "--tasks", "phantom_presence", "--limit", "200",
                 "--output", str(tmp_path / "eval"), "--batch-size", "50", "--no-cache", "--no-progress"])
    assert code == 0
    balanced = balanced_accuracy(tmp_path / "eval")
    print(f"{presets[0]} ablate={ablate}: balanced accuracy {balanced:.3f} on 200 test scans")
    if learns:
        assert balanced >= 0.90
    else:
        assert balanced <= 0.60
