"""Configuration: defaults, then the user's TOML file, then RUMINATION_* variables, then flags."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from rumination import protocol


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
    context_window: int | None = Field(None, description="override the model's context window (tokens)")
    temperature: float = Field(protocol.DEFAULT_TEMPERATURE, ge=0)
    top_p: float = Field(protocol.DEFAULT_TOP_P, gt=0, le=1)
    seed: int | None = None

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
    search_results: int = Field(10, ge=1, le=50)
    search_layout: Literal["card", "glm4"] = "card"
    fetcher: str = "web"
    allow_private_network: bool = False
    page_max_tokens: int = Field(8000, ge=100, description="page text kept per observation")
    fetch_timeout: float = Field(30.0, gt=0, description="total seconds per fetch")
    fetch_max_bytes: int = Field(5_000_000, ge=10_000)
    user_agent: str = "Rumination/0.1 (local deep-research agent)"

    @field_validator("script", mode="before")
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
            if value is None:
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
