"""Configuration: defaults, then the user's TOML file, then RUMINATION_* variables, then flags."""

from __future__ import annotations

import difflib
import os
import re
import typing
from contextvars import ContextVar
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from rumination import protocol
from rumination.errors import ConfigError
from rumination.urls import has_userinfo

ENV_PREFIX = "RUMINATION_"
CONFIG_FILE_VARIABLE = ENV_PREFIX + "CONFIG_FILE"


def _user_dir(kind: str) -> Path:
    from platformdirs import user_cache_path, user_data_path

    return (user_data_path if kind == "data" else user_cache_path)("rumination")


def environment_variable(name: str) -> str | None:
    """The variable `name` as it is spelt in the environment (pydantic-settings reads any case), if set."""
    return next((variable for variable in os.environ if variable.upper() == name), None)


def config_path() -> Path:
    """The user's config file: $RUMINATION_CONFIG_FILE, else config.toml in the platform config dir."""
    variable = environment_variable(CONFIG_FILE_VARIABLE)
    if variable and os.environ[variable]:
        return Path(os.environ[variable]).expanduser()
    from platformdirs import user_config_path

    return user_config_path("rumination") / "config.toml"


def _names(value: Any) -> Any:
    """A list setting: names may also come joined by commas or spaces, and from the environment as a JSON list."""
    if isinstance(value, str) and value.lstrip().startswith("["):
        import json

        try:
            value = json.loads(value)
        except ValueError as exc:
            raise ValueError(f"not a JSON list ({exc}); write names separated by commas instead") from None
    if isinstance(value, str):
        value = [value]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return [name for item in value for name in re.split(r"[,\s]+", item) if name]
    return value


# A list of names: from a file or Python a list, from the environment "a.org,b.org" or '["a.org", "b.org"]'.
Names = Annotated[list[str], NoDecode, BeforeValidator(_names)]


# Each group of settings is a class of its own: its docstring names the group in `--help` and `rumination config`.


class ModelSettings(BaseModel):
    """model"""

    backend: str = Field("local", description="model backend: local, openai (a serving engine), scripted, or a plugin")
    model: str = Field(protocol.DEFAULT_MODEL, description="Hugging Face id or local model directory")
    script: Path | None = Field(None, description="JSON array of model outputs to replay (implies --backend scripted)")
    device: Literal["auto", "cuda", "cpu"] = Field("auto", description="where the local backend runs")
    dtype: Literal["bfloat16", "float16", "float32", "auto"] = Field("bfloat16", description="weight dtype")
    temperature: float = Field(protocol.DEFAULT_TEMPERATURE, ge=0, description="sampling temperature (0: greedy)")
    top_p: float = Field(protocol.DEFAULT_TOP_P, gt=0, le=1, description="nucleus sampling")
    top_k: int = Field(protocol.DEFAULT_TOP_K, ge=0, description="sample from the k likeliest tokens (0: no limit)")
    seed: int | None = Field(None, description="random seed for reproducible sampling")


class PromptSettings(BaseModel):
    """the model's fixed system prompt"""

    thinking_language: protocol.Language = Field("en", description="language the model thinks in")
    search_language: protocol.Language = Field("en", description="language of the model's search keywords")
    current_year: bool = Field(True, description="tell the model this year (its template says 2025)")
    today: date | None = Field(
        None,
        description="pin the date whose year the model is told, YYYY-MM-DD (reproducible runs; wins over the above)",
    )


class ServerSettings(BaseModel):
    """serving engine (--backend openai: vLLM, SGLang or any OpenAI-compatible server)"""

    base_url: str | None = Field(
        None, description="the server's API root, e.g. http://localhost:8000/v1 (implies --backend openai)"
    )
    openai_api_key: SecretStr | None = Field(None, description="the server's API key")
    served_model: str | None = Field(None, description="model name on the server (default: the only one it serves)")
    openai_mode: Literal["completions", "chat"] = Field(
        "completions",
        description="completions: send token ids rendered with -m's tokenizer (exact); chat: the server's template",
    )
    server_timeout: float = Field(300.0, gt=0, description="seconds to wait for the server's next bytes")
    server_retries: int = Field(2, ge=0, le=10, description="retries of a request on 429 and 5xx, with backoff")


Quantize = Literal["none", "int8", "fp8", "8bit", "4bit"]
TORCHAO: tuple[Quantize, ...] = ("int8", "fp8")  # weight-only through torchao: the decode step stays compiled


class LocalModelSettings(BaseModel):
    """local model (speed and memory)"""

    context_window: int | None = Field(
        None, ge=256, description="context to allocate in tokens; past the model's own, YaRN RoPE scaling is applied"
    )
    prefix_cache: bool = Field(True, description="keep the KV cache between turns and prefill only new tokens")
    kv_cache: Literal["auto", "static", "dynamic", "fp8"] = Field(
        "auto", description="static: preallocated, compiled decode (auto on CUDA); dynamic (auto on CPU); fp8: half"
    )
    quantize: Quantize = Field(
        "none",
        description="weights: int8, fp8 (torchao; decode stays compiled; fp8 from Ada on), 8bit, 4bit (bitsandbytes)",
    )
    attention: Literal["auto", "flex", "sdpa", "flash_attention_2", "eager"] = Field(
        "auto",
        description="attention kernel (auto: SDPA with packed GQA decode; flex: compiled steps read exactly the cache"
        " in use, one graph for every length; experimental)",
    )
    compile: Literal["auto", "on", "off"] = Field("auto", description="compile the decode step (auto: on CUDA)")
    device_map: str = Field("auto", description="placement over several GPUs: auto, balanced, sequential")
    prefill_chunk: int = Field(2048, ge=16, description="prompt tokens per prefill forward pass")
    speculate: Literal["auto", "on", "off"] = Field(
        "auto", description="verify prompt-lookup drafts several tokens a step (auto: while it measures faster)"
    )
    draft_tokens: int = Field(6, ge=1, le=16, description="tokens drafted per speculative step")


class BudgetSettings(BaseModel):
    """budgets"""

    max_turns: int = Field(protocol.DEFAULT_MAX_TURNS, ge=1, description="tool turns before the report")
    max_new_tokens: int = Field(protocol.DEFAULT_MAX_NEW_TOKENS, ge=16, description="tokens per generation")
    max_context_tokens: int = Field(110_000, ge=256, description="force the report above this prompt size")
    max_format_errors: int = Field(3, ge=1, description="consecutive bad tool calls before forcing the report")
    max_repeats: int = Field(3, ge=2, description="identical actions in a run before forcing the report")
    max_seconds: float | None = Field(None, gt=0, description="wall-clock budget for the research, in seconds")


class SearchSettings(BaseModel):
    """search"""

    search: str = Field("ddgs", description="search engine: ddgs, searxng, brave, tavily, local:INDEX, or a plugin")
    searxng_url: str | None = Field(None, description="base URL of your SearXNG instance (implies --search searxng)")
    ddgs_backend: str = Field("auto", description="ddgs backend: auto, duckduckgo, bing, brave, ...")
    search_fallback: Names = Field(default_factory=list, description="engine to try when the first one fails")
    search_min_interval: float = Field(1.0, ge=0, description="seconds between two calls to one engine")
    search_results: int = Field(10, ge=1, le=50, description="results per search")
    search_layout: protocol.SearchLayout = Field("glm4", description="how search results are shown to the model")
    brave_api_key: SecretStr | None = Field(None, description="Brave Search API key")
    brave_url: str = Field("https://api.search.brave.com/res/v1/web/search", description="Brave Search endpoint")
    tavily_api_key: SecretStr | None = Field(None, description="Tavily API key")
    tavily_url: str = Field("https://api.tavily.com/search", description="Tavily endpoint")


class SourceSettings(BaseModel):
    """sources the model may use"""

    allow_domains: Names = Field(
        default_factory=list,
        description="only this domain and subdomains: in results, pages opened, every redirect and the page cache",
    )
    deny_domains: Names = Field(
        default_factory=list,
        description="never this domain or subdomains: in results, pages opened, any redirect or the page cache",
    )
    allow_private_network: bool = Field(
        False,
        description="let the model open intranet and local addresses a private origin led to (the question, an "
        "allowed domain, a private engine, an intranet page)",
    )
    open_any_url: bool = Field(
        False, description="let the model open URLs it was never shown (not other indexes, never the intranet)"
    )
    allow_web: bool = Field(
        False, description="let a run that searches only local indexes open web pages (off: it never touches the web)"
    )

    @field_validator("allow_domains", "deny_domains")
    @classmethod
    def _domains(cls, entries: list[str]) -> list[str]:
        from rumination.urls import normalize_domain

        for entry in entries:  # an entry naming no host would widen an allow list to everything, or deny nothing
            if not re.fullmatch(r"[a-z0-9_.-]+|[0-9a-f:.]+", normalize_domain(entry)):
                raise ValueError(f"{entry!r} names no domain (write example.org, or *.example.org)")
        return entries


class BrowsingSettings(BaseModel):
    """browsing"""

    fetcher: str = Field("web", description="page fetcher: web, or a plugin's name")
    page_max_tokens: int = Field(8000, ge=100, description="page text kept per observation, in tokens")
    fetch_timeout: float = Field(30.0, gt=0, description="total seconds per fetch")
    fetch_max_bytes: int = Field(5_000_000, ge=10_000, description="largest page body read")
    robots_txt: bool = Field(True, description="honour robots.txt of the sites the model opens")
    prefetch: int = Field(3, ge=0, le=10, description="top search results fetched ahead of a click")
    page_cache: bool = Field(True, description="keep fetched pages on disk for a day and reuse them")
    pdf_timeout: float = Field(30.0, gt=0, description="seconds to parse one PDF")
    pdf_max_memory_mb: int = Field(1024, ge=64, description="memory limit of the PDF parser")
    extract_timeout: float = Field(
        15.0, gt=0, description="seconds to extract one page's main text (past it: a plain-text fallback)"
    )
    extract_max_memory_mb: int = Field(1024, ge=64, description="memory limit of the page extractor")
    user_agent: str = Field("Rumination/0.1 (local deep-research agent)", description="User-Agent of every request")


class StorageSettings(BaseModel):
    """storage"""

    web_snapshot: Path | None = Field(
        None, description="record searches and pages in this folder on first use, replay them later (no network)"
    )
    data_dir: Path = Field(
        default_factory=lambda: _user_dir("data"), description="where local indexes and run journals live"
    )
    journal: bool = Field(True, description="journal the run in the data dir (rumination sessions, resume, replay)")
    cache_dir: Path = Field(default_factory=lambda: _user_dir("cache"), description="where the page cache lives")


class BatchSettings(BaseModel):
    """batch and evaluation"""

    concurrency: int = Field(8, ge=1, le=256, description="questions researched at once (the local backend: 1)")
    judge_backend: str | None = Field(
        None, description="also grade reports with a judge model on this backend (SimpleQA's scheme)"
    )
    judge_model: str | None = Field(None, description="the judge's model: Hugging Face id or dir (local, tokenizer)")
    judge_base_url: str | None = Field(None, description="the judge's server API root (implies --judge-backend openai)")
    judge_served_model: str | None = Field(None, description="the judge's model name on its server")
    judge_api_key: SecretStr | None = Field(None, description="the judge server's API key")


GROUPS: tuple[type[BaseModel], ...] = (
    ModelSettings,
    ServerSettings,
    PromptSettings,
    LocalModelSettings,
    BudgetSettings,
    SearchSettings,
    SourceSettings,
    BrowsingSettings,
    StorageSettings,
    BatchSettings,
)


class Config(
    BatchSettings,
    StorageSettings,
    BrowsingSettings,
    SourceSettings,
    SearchSettings,
    BudgetSettings,
    LocalModelSettings,
    PromptSettings,
    ServerSettings,
    ModelSettings,
    BaseSettings,
):
    """Every setting of a research run."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", validate_assignment=True)

    def __init__(self, **values: Any):
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise ConfigError(describe_errors(exc, values)) from None

    @classmethod
    def from_flags(cls, values: dict[str, Any], flags: dict[str, str]) -> Config:
        """Build from command-line values; `flags` maps each field to the option that set it, for messages."""
        token = _given_as.set(flags)
        try:
            return cls(**values)
        finally:
            _given_as.reset(token)

    @field_validator("base_url", "judge_base_url")
    @classmethod
    def _api_root(cls, url: str | None) -> str | None:
        from urllib.parse import urlsplit

        if url is None:
            return None
        url = url.strip()
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{url!r} is not an http:// or https:// URL (e.g. http://localhost:8000/v1)")
        for endpoint in ("/chat/completions", "/completions", "/models"):
            if parts.path.rstrip("/").endswith(endpoint):
                root = url.rstrip("/").removesuffix(endpoint)
                raise ValueError(f"give the API root, {root!r}, not an endpoint under it")
        return url

    @field_validator("script", "data_dir", "cache_dir", "web_snapshot", mode="before")
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
        path = config_path()
        if environment_variable(CONFIG_FILE_VARIABLE) and not path.is_file():
            raise ConfigError(f"config file not found: {path} (from {CONFIG_FILE_VARIABLE})")
        _check_env_names()
        try:
            toml = TomlConfigSettingsSource(settings_cls, toml_file=path)
        except ValueError as exc:  # tomllib's message names the line and column
            raise ConfigError(f"cannot read the config file {path}: {exc}") from None
        except OSError as exc:
            raise ConfigError(f"cannot read the config file {path}: {exc.strerror or exc}") from None
        # Earlier sources win: flags (init), then the environment, then the TOML file.
        sources = (init_settings, env_settings, toml)
        return _Implied(settings_cls, sources), *sources

    @property
    def engines(self) -> list[str]:
        """The search engine, then its fallbacks, as configured."""
        return [self.search, *self.search_fallback]

    def to_toml(self) -> str:
        """The effective configuration as TOML, grouped as in `--help`, for `rumination config`."""
        values = self.model_dump(mode="json")
        lines = []
        for group in GROUPS:
            lines.append(f"\n# {group.__doc__}")
            for key in group.model_fields:
                lines.append(_toml_line(key, values[key], secret=is_secret(key, values[key])))
        return "\n".join(lines).lstrip("\n") + "\n"


# Keys: never printed, and a flag only where the flags module says so (shell history, `ps`).
SECRETS = frozenset(name for name, info in Config.model_fields.items() if SecretStr in typing.get_args(info.annotation))


def is_secret(name: str, value: Any) -> bool:
    """Whether a setting is never printed nor journaled: a key, or a URL with a user name or password in it."""
    return name in SECRETS or (isinstance(value, str) and "://" in value and has_userinfo(value))


# A setting that implies another's value: (cause, setting, value).
IMPLICATIONS = (
    ("script", "backend", "scripted"),
    ("searxng_url", "search", "searxng"),
    ("base_url", "backend", "openai"),
    ("judge_base_url", "judge_backend", "openai"),
)


class _Implied(PydanticBaseSettingsSource):
    """A script implies the scripted backend, SearXNG's URL SearXNG, a server URL the openai backend, unless overridden.

    "Otherwise" counts only where it was said with the same or a higher precedence: a backend in the
    config file does not outweigh a --script flag.
    """

    def __init__(self, settings_cls: type[BaseSettings], sources: tuple[PydanticBaseSettingsSource, ...]):
        super().__init__(settings_cls)
        self.sources = sources

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        """Unused: this source answers as a whole."""
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        values = [source() for source in self.sources]  # highest precedence first
        implied = {}
        for cause, setting, value in IMPLICATIONS:
            for given in values:
                if given.get(setting) is not None:
                    break
                if cause in given:  # the highest source that names the cause decides, even to clear it
                    if given[cause]:
                        implied[setting] = value
                    break
        return implied


def _toml_line(key: str, value: Any, *, secret: bool) -> str:
    if secret and value is not None:
        return f'{key} = "**********"'
    if isinstance(value, list):
        return f"{key} = [{', '.join(_toml_str(str(v)) for v in value)}]"
    if value is None:
        return f"# {key} = (unset)"
    if isinstance(value, bool):
        return f"{key} = {str(value).lower()}"
    if isinstance(value, int | float):
        return f"{key} = {value}"
    return f"{key} = {_toml_str(str(value))}"


def _toml_str(value: str) -> str:
    import json

    return json.dumps(value, ensure_ascii=False)


def env_name(field: str) -> str:
    """The environment variable that sets `field`."""
    return ENV_PREFIX + field.upper()


def closest_field(name: str) -> str | None:
    """The setting whose name is closest to a misspelt `name`, if any is close."""
    match = difflib.get_close_matches(name.lower().replace("-", "_"), list(Config.model_fields), n=1, cutoff=0.6)
    return match[0] if match else None


def _check_env_names() -> None:
    """A RUMINATION_* variable that names no setting is a typo: say which one was meant."""
    for variable in os.environ:  # pydantic-settings reads them case-insensitively: so do we
        if not variable.upper().startswith(ENV_PREFIX) or variable.upper() == CONFIG_FILE_VARIABLE:
            continue
        field = variable[len(ENV_PREFIX) :].lower()
        if field not in Config.model_fields:
            near = closest_field(field)
            hint = f"; did you mean {env_name(near)}?" if near else ""
            if field.startswith("config"):
                hint = f"; did you mean {CONFIG_FILE_VARIABLE}?"
            raise ConfigError(f"unknown setting in the environment: {variable}{hint}")


# How the caller names each setting it passes (the CLI: its flags), so messages name what the user typed.
_given_as: ContextVar[dict[str, str] | None] = ContextVar("given_as", default=None)


def describe_errors(exc: ValidationError, given: dict[str, Any]) -> str:
    """Every problem of a validation error, each naming where the bad value came from."""
    return "invalid configuration: " + "; ".join(_describe(error, given) for error in exc.errors())


def _describe(error: Any, given: dict[str, Any]) -> str:
    field = str(error["loc"][0]) if error["loc"] else ""
    source = setting_source(field, given)
    if error["type"] == "extra_forbidden":
        near = closest_field(field)
        hint = f"; did you mean {near!r}?" if near else ""
        return f"unknown setting {field!r} (from {source}){hint}"
    return f"{field}: {error['msg'].removeprefix('Value error, ')} (from {source})"


def setting_source(field: str, given: dict[str, Any]) -> str:
    """Where `field`'s value came from: the flag or argument, the variable, or the file and line."""
    if field in given:
        return (_given_as.get() or {}).get(field, f"Config({field}=...)")
    variable = environment_variable(env_name(field))
    if variable:
        return variable
    path = config_path()
    line = _toml_line_number(path, field)
    return f"{path}, line {line}" if line else str(path)


def _toml_line_number(path: Path, key: str) -> int | None:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    pattern = re.compile(rf"^\s*[\"']?{re.escape(key)}[\"']?\s*=")
    return next((i for i, line in enumerate(text.splitlines(), 1) if pattern.match(line)), None)
