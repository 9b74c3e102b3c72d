"""Backend requests for the backend tests (a helper module, not a test file)."""

from __future__ import annotations

from PIL import Image

from medharness.backends import Request
from medharness.records import GenerationSettings, Message, Part, Prompt

GREEDY = GenerationSettings(max_new_tokens=24)


def request(sid: str, text: str, images: list[Image.Image] | None = None, settings: GenerationSettings = GREEDY,
            system: str | None = None) -> Request:
    """A user message with its image parts first, optionally after a system message."""
    images = images or []
    parts = (*(Part(type="image", image=f"img{i}.png") for i in range(len(images))), Part(type="text", text=text))
    messages = (Message(role="user", content=parts),)
    if system:
        messages = (Message(role="system", content=(Part(type="text", text=system),)), *messages)
    return Request(prompt=Prompt(sample_id=sid, messages=messages, settings=settings), images=list(images))
