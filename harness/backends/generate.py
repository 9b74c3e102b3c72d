"""Generating through the response cache: the one path the run loop, judging and training rewards share."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from medharness.backends.base import Backend, Request
from medharness.backends.cache import ResponseCache, cache_key
from medharness.core.records import Generation


@dataclass(frozen=True)
class Generated:
    """One request's generation, whether it came from the cache, and its cache key."""

    generation: Generation
    cached: bool
    key: str


def generate_cached(backend: Backend, requests: Sequence[Request], cache: ResponseCache | None,
                    keys: Sequence[str] | None = None, store: bool = True) -> list[Generated]:
    """Generate every request through the response cache, in request order: hits from `cache`, misses from
    `backend.generate` (stored unless `store=False`: a caller that keeps only some replies, like the judges,
    stores them itself). `keys` default to `cache_key(fingerprint, prompt, images)`. A request the backend
    dropped gets a failed Generation, never a crash. The one path the run loop, judging and rewards share."""
    if not requests:
        return []
    if keys is None:
        keys = [cache_key(backend.fingerprint, r.prompt, r.images) for r in requests]
    use_cache = cache is not None and backend.cacheable
    hits = cache.get_many(keys) if use_cache and cache is not None else {}
    misses = [(k, r) for k, r in zip(keys, requests, strict=True) if k not in hits]
    fresh = backend.generate([r for _, r in misses]) if misses else []
    if use_cache and cache is not None and store:
        cache.put_many((k, g) for (k, _), g in zip(misses, fresh, strict=False))
    fresh_by_id = {g.sample_id: g for g in fresh}
    out = []
    for key, request in zip(keys, requests, strict=True):
        sid = request.prompt.sample_id
        if key in hits:
            out.append(Generated(hits[key].model_copy(update={"sample_id": sid}), True, key))
        else:
            gen = fresh_by_id.get(sid) or Generation(sample_id=sid, text="", model=backend.fingerprint,
                                                     error="backend returned no generation")
            out.append(Generated(gen, False, key))
    return out
