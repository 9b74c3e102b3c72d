"""Token prices for API models, to report what a run cost. USD per million tokens (input, output).

Providers change prices: each entry says when it was read. A model without an entry gets no cost
(never a guess). Add entries here or through a plugin (`PRICES["my-model"] = (in, out)`).
"""

from __future__ import annotations

PRICES: dict[str, tuple[float, float]] = {
    # OpenAI pricing page, standard tier, as of 2025
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    # Google AI pricing page, prompts up to 128k tokens, as of 2025
    "gemini-1.5-flash": (0.075, 0.30),
    "gemini-2.0-flash": (0.10, 0.40),
}


def cost_usd(model: str, prompt_tokens: int, completion_tokens: int) -> float | None:
    """The cost of the tokens at the model's listed price, or None when the model has no entry."""
    price = PRICES.get(model.split("/")[-1])
    if price is None:
        return None
    return round((prompt_tokens * price[0] + completion_tokens * price[1]) / 1e6, 6)
