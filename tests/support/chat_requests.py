"""Backend requests for the backend tests (a helper module, not a test file)."""

from __future__ import annotations

import io

from PIL import Image

from medharness.backends import Request
from medharness.core.records import GenerationSettings, Message, Part, Prompt

GREEDY = GenerationSettings(max_new_tokens=24)


def request(sid: str, text: str, images: list[Image.Image] | None = None,
            settings: GenerationSettings = GREEDY, system: str | None = None) -> Request:
    """A user message with its image parts first, optionally after a system message."""
    images = images or []
    parts = (*(Part(type="image", image=f"img{i}.png") for i in range(len(images))),
             Part(type="text", text=text))
    messages = (Message(role="user", content=parts),)
    if system:
        messages = (Message(role="system", content=(Part(type="text", text=system),)), *messages)
    return Request(prompt=Prompt(sample_id=sid, messages=messages, settings=settings), images=list(images))


def mixed_requests(settings: GenerationSettings = GREEDY) -> list[Request]:
    """Images of different sizes and modes (4 to 16 image tokens), two images in one prompt, a system turn,
    and text only: five prompts of different lengths."""
    return [
        request("small", "What is shown?", [Image.new("RGB", (60, 80), (200, 10, 10))], settings),
        request("square", "Describe the lesion in this chest x-ray. Answer in <answer></answer>.",
                [Image.new("RGB", (112, 112), (0, 100, 10))], settings, system="Be brief."),
        request("wide", "Is there an effusion? yes or no", [Image.new("RGB", (300, 90), (5, 5, 250))],
                settings),
        request("two", "Compare the two scans.", [Image.new("RGB", (90, 90), (90, 90, 90)),
                                                  Image.new("L", (200, 150), 30)], settings),
        request("text", "Question: what abnormality is visible? Answer: " * 3, [], settings),
    ]


def truncated_png() -> Image.Image:
    """A PNG cut in half: opens, fails when decoded."""
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(buf, "PNG")
    return Image.open(io.BytesIO(buf.getvalue()[: len(buf.getvalue()) // 2]))
