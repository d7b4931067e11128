"""Configuration: defaults, then the user's TOML file, then RUMINATION_* variables, then flags."""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from rumination import protocol


def _user_dir(kind: str) -> Path:
    from platformdirs import user_cache_path, user_data_path

    return (user_data_path if kind == "data" else user_cache_path)("rumination")


def config_path() -> Path:
    """The user's config file: $RUMINATION_CONFIG_FILE, else config.toml in the platform config dir."""
    override = os.environ.get("RUMINATION_CONFIG_FILE")
    if override:
        return Path(override).expanduser()
    from platformdirs import user_config_path

    return user_config_path("rumination") / "config.toml"


class Config(BaseSettings):
    """Every setting of a research run."""

    model_config = SettingsConfigDict(env_prefix="RUMINATION_", extra="forbid", validate_assignment=True)

    # Model
    backend: str = Field("local", description="model backend: local, scripted, or a plugin's name")
    model: str = Field(protocol.DEFAULT_MODEL, description="Hugging Face id or local directory")
    script: Path | None = Field(None, description="JSON array of outputs for the scripted backend")
    device: Literal["auto", "cuda", "cpu"] = Field("auto", description="where the local backend runs")
    dtype: Literal["bfloat16", "float16", "float32", "auto"] = "bfloat16"
    context_window: int | None = Field(None, ge=256, description="context window to allocate (tokens)")
    prefix_cache: bool = Field(True, description="keep the KV cache between turns and prefill only new tokens")
    kv_cache: Literal["auto", "static", "dynamic", "fp8"] = Field(
        "auto", description="KV cache: static (preallocated; auto on CUDA), dynamic (auto on CPU), fp8 (half size)"
    )
    quantize: Literal["none", "8bit", "4bit"] = Field("none", description="bitsandbytes weight quantisation (CUDA)")
    attention: Literal["auto", "sdpa", "flash_attention_2", "eager"] = "auto"
    compile: Literal["auto", "on", "off"] = Field("auto", description="compile the decode step; auto: static on CUDA")
    device_map: str = Field("auto", description="placement over several GPUs: auto, balanced, sequential")
    prefill_chunk: int = Field(2048, ge=16, description="prompt tokens per prefill forward pass")
    temperature: float = Field(protocol.DEFAULT_TEMPERATURE, ge=0)
    top_p: float = Field(protocol.DEFAULT_TOP_P, gt=0, le=1, description="nucleus sampling")
    top_k: int = Field(protocol.DEFAULT_TOP_K, ge=0, description="sample from the k likeliest tokens (0: no limit)")
    seed: int | None = Field(None, description="random seed for reproducible sampling")

    # The fixed system prompt's settings (edited in the rendered system segment only)
    thinking_language: protocol.Language = Field("en", description="language the model thinks in")
    search_language: protocol.Language = Field("en", description="language of the model's search keywords")
    current_year: bool = Field(True, description="tell the model this year (the template says 2025)")
    today: date | None = Field(None, description="pin the date the model is told, YYYY-MM-DD (reproducible runs)")

    # Budgets
    max_turns: int = Field(protocol.DEFAULT_MAX_TURNS, ge=1)
    max_new_tokens: int = Field(protocol.DEFAULT_MAX_NEW_TOKENS, ge=16)
    max_context_tokens: int = Field(110_000, ge=256, description="force the finish above this prompt size")
    max_format_errors: int = Field(3, ge=1, description="consecutive bad tool calls before forcing finish")
    max_repeats: int = Field(3, ge=2, description="identical actions in a run before forcing finish")
    max_seconds: float | None = Field(None, gt=0, description="wall-clock budget for the tool turns")

    # Search and browsing
    search: str = Field("ddgs", description="search engine: ddgs, searxng, or a plugin's name")
    searxng_url: str | None = Field(None, description="base URL of a SearXNG instance")
    ddgs_backend: str = Field("auto", description="ddgs backend, e.g. duckduckgo, bing, auto")
    search_fallback: list[str] = Field(default_factory=list, description="engines to try when the first fails")
    search_min_interval: float = Field(1.0, ge=0, description="seconds between two calls to one engine")
    brave_api_key: SecretStr | None = None
    brave_url: str = "https://api.search.brave.com/res/v1/web/search"
    tavily_api_key: SecretStr | None = None
    tavily_url: str = "https://api.tavily.com/search"
    allow_domains: list[str] = Field(default_factory=list, description="if set, only these domains (and subdomains)")
    deny_domains: list[str] = Field(default_factory=list, description="never these domains (and subdomains)")
    search_results: int = Field(10, ge=1, le=50)
    search_layout: protocol.SearchLayout = Field("glm4", description="how search results are shown to the model")
    fetcher: str = "web"
    allow_private_network: bool = False
    open_any_url: bool = Field(False, description="let the model open URLs it has not seen in results or pages")
    page_max_tokens: int = Field(8000, ge=100, description="page text kept per observation")
    fetch_timeout: float = Field(30.0, gt=0, description="total seconds per fetch")
    fetch_max_bytes: int = Field(5_000_000, ge=10_000)
    robots_txt: bool = Field(True, description="honour robots.txt of the sites the model opens")
    prefetch: int = Field(3, ge=0, le=10, description="top search results fetched ahead of a click")
    page_cache: bool = Field(True, description="keep fetched pages on disk and reuse them")
    pdf_timeout: float = Field(30.0, gt=0)
    pdf_max_memory_mb: int = Field(1024, ge=64)
    data_dir: Path = Field(default_factory=lambda: _user_dir("data"), description="local indexes")
    cache_dir: Path = Field(default_factory=lambda: _user_dir("cache"), description="page cache")
    user_agent: str = "Rumination/0.1 (local deep-research agent)"

    @field_validator("script", "data_dir", "cache_dir", mode="before")
    @classmethod
    def _expand(cls, value: Any) -> Any:
        return Path(value).expanduser() if isinstance(value, str) and value else value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Earlier sources win: flags (init), then the environment, then the TOML file.
        return init_settings, env_settings, TomlConfigSettingsSource(settings_cls, toml_file=config_path())

    def to_toml(self) -> str:
        """The effective configuration as TOML, for `rumination config`."""
        lines = []
        for key, value in self.model_dump(mode="json").items():
            if key.endswith("_api_key") and value is not None:
                lines.append(f'{key} = "**********"')
            elif isinstance(value, list):
                lines.append(f"{key} = [{', '.join(_toml_str(str(v)) for v in value)}]")
            elif value is None:
                lines.append(f"# {key} = (unset)")
            elif isinstance(value, bool):
                lines.append(f"{key} = {str(value).lower()}")
            elif isinstance(value, int | float):
                lines.append(f"{key} = {value}")
            else:
                lines.append(f"{key} = {_toml_str(str(value))}")
        return "\n".join(lines) + "\n"


def _toml_str(value: str) -> str:
    import json

    return json.dumps(value, ensure_ascii=False)
