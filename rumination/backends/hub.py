"""Where a model is loaded from: a local directory, the Hugging Face cache, or the hub when it answers."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rumination.errors import BackendError

PROBE_SECONDS = 3.0  # the hub client retries a refused connection for ~25 s: ask once, briefly, first


@dataclass(frozen=True)
class ModelSource:
    """What to pass to from_pretrained: the name as given, and whether to stay off the network."""

    name: str
    local_files_only: bool = False


def looks_like_path(name: str) -> bool:
    """A name written as a path, never a hub id."""
    return name.startswith(("/", ".", "~"))


def locate(name: str, marker: str = "config.json") -> ModelSource:
    """Decide how to load `name`; raise a BackendError at once when it cannot be found without the hub.

    A hub id whose `marker` file is in the local cache loads from the cache alone (no network, no update check).
    """
    if Path(name).expanduser().is_dir():
        return ModelSource(name)
    if looks_like_path(name):
        raise BackendError(f"model directory not found: {name}")
    from huggingface_hub import constants, try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(name, marker)
    except ValueError:  # not a valid hub id either (e.g. "models/glm/z1", "foo bar")
        raise BackendError(f"model not found: {name!r} is neither a directory nor a Hugging Face model id") from None
    if isinstance(cached, str):
        return ModelSource(name, local_files_only=True)
    if constants.HF_HUB_OFFLINE:
        raise BackendError(not_found(name, "HF_HUB_OFFLINE is set", constants.HF_HUB_CACHE, marker))
    if not hub_reachable(constants.ENDPOINT):
        why = f"the hub ({constants.ENDPOINT}) cannot be reached"
        raise BackendError(not_found(name, why, constants.HF_HUB_CACHE, marker))
    return ModelSource(name)


def hub_reachable(endpoint: str, timeout: float = PROBE_SECONDS) -> bool:
    """Whether the hub answers at all (any HTTP status), asked once through the usual proxies."""
    import httpx

    try:
        httpx.head(endpoint, timeout=timeout)
    except httpx.HTTPError:
        return False
    return True


def not_found(name: str, why: str, cache: str, marker: str = "config.json") -> str:
    """The message for a model that is neither a directory nor cached, and cannot be downloaded now."""
    only = " --include 'tokenizer*'" if marker.startswith("tokenizer") else ""  # no weights needed
    return (
        f"model not found: {name!r} is not in the Hugging Face cache ({cache}) and {why}.\n"
        f"Download it first (hf download {name}{only}) or pass -m DIR."
    )
