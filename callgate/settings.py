"""One typed settings object for the whole server, read from environment variables (and `.env`).

Every server variable is documented in README.md and read only here. Outside the server's settings,
the environment gives: the CLI's `CALLGATE_API_KEY` (`callgate campaign`), prometheus_client's own
`PROMETHEUS_MULTIPROC_DIR` (set by `callgate serve --workers N`), and the tools' data paths
(`CALLGATE_DEV_GREETINGS`, `CALLGATE_ASTERISK_SOUNDS`, `CALLGATE_MOH_DIR`).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Server configuration. Environment variables are the field names in upper case."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    public_base_url: str = Field(
        "",
        description="The https URL Twilio reaches this server at (your ngrok URL). Signatures are checked "
        "against it, never against the Host header. Unset: http://HOST:PORT, for local use.",
    )
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)

    twilio_account_sid: str | None = None
    twilio_auth_token: str | None = Field(
        None, description="When set, webhook and WebSocket signatures are enforced; unset = dev mode."
    )
    twilio_api_base_url: str = Field(
        "https://api.twilio.com", description="Twilio REST base URL; tests point it at the simulator."
    )
    twilio_from_number: str | None = None

    token_ttl_secs: float = Field(60.0, description="Lifetime of the single-use Stream token.")
    token_secret: str | None = Field(
        None, description="HMAC key for Stream tokens; defaults to the auth token, else a random key."
    )

    default_workflow: str = "voicemail_drop"
    voicemail_message: Path | None = Field(
        None, description="WAV or raw .ulaw played by voicemail_drop; defaults to the shipped sample."
    )
    messages_dir: Path = Field(
        Path("messages"), description="Folder that message names given in API requests are resolved in."
    )
    greeting_end_silence_secs: float = Field(
        2.5, description="voicemail_drop: silence after speech that ends a greeting with no beep."
    )
    call_timeout_secs: float = Field(
        60.0, description="Safety timeout: a call where nothing decisive happens is ended."
    )
    message_cache_dir: Path = Field(
        Path.home() / ".cache" / "callgate", description="Where converted 8 kHz µ-law messages are cached."
    )
    trace_dir: Path | None = Field(None, description="When set, every call saves its AMD trace here.")
    amd_model_path: Path | None = Field(None, description="AMD ONNX model; defaults to the shipped one.")
    amd_presets_path: Path | None = Field(
        None, description="AMD detector presets (JSON); defaults to pipelines/presets/amd.json."
    )
    listen_presets_path: Path | None = Field(
        None, description="Listening presets (gate + endpointer, JSON); defaults to pipelines/presets/listen.json."
    )
    listen_endpointer_ends_turns: bool = Field(
        True,
        description="agent: a user turn ends only on the semantic endpointer's final turn_end, plus the STT "
        "final (off: at VAD end plus the STT final, the endpointer's events being logged only, and no greedy "
        "replies).",
    )
    listen_greedy_replies: bool = Field(
        True,
        description="agent (with LISTEN_ENDPOINTER_ENDS_TURNS): ask the LLM on the endpointer's tentative turn "
        "end and hold the reply's audio until the final end (scrapped unheard if the caller goes on).",
    )
    listen_finalize_on_tentative: bool = Field(
        False,
        description="agent (with LISTEN_ENDPOINTER_ENDS_TURNS): also send the STT's Finalize (Deepgram) on the "
        "endpointer's tentative turn end, not only at the VAD's stop: no p50 gain measured "
        "(scripts/bench_agent_latency.py), and a pause after words that sound complete ('Yes,') then "
        "gets its final words in time to close the turn there (off: the VAD's later stop guards it).",
    )
    amd_callback_url: str | None = Field(
        None, description="parallel_dial / power_dial POST each verdict here as JSON, as soon as it is made."
    )
    connect_number: str | None = Field(
        None, description="Human action: bridge a human to this number with <Dial>; unset = polite hang-up."
    )
    human_goodbye: str = Field(
        "Sorry, nobody is available to take this call right now. We will call you back. Goodbye.",
        description="What a human hears before the polite hang-up when no CONNECT_NUMBER is set.",
    )
    # --- agent: barge-in (processors/interruption.py) and the bot's playout (processors/bot_speech.py)
    barge_in_min_ms: float = Field(
        1200.0,
        description="agent: caller speech over the bot this long is a barge-in even without words (words that "
        "are not a backchannel confirm one as soon as the STT shows them).",
    )
    backchannel_max_ms: float = Field(
        1500.0, description="agent: caller speech longer than this is never a backchannel (uh-huh, yeah)."
    )
    backchannel_transcript_wait_ms: float = Field(
        500.0, description="agent: after short speech over the bot, wait this long for its transcript."
    )
    barge_in_early_threshold: float = Field(
        0.8,
        description="agent: the early audio cue (processors/interruption.py BargeCue, 200 ms after the caller's "
        "onset) clears at once above this probability; lower = faster barge-in, more backchannels cleared; "
        "above 1 turns it off (words or duration then confirm every barge-in).",
    )
    bot_audio_lead_ms: float = Field(
        60.0, description="agent: bot audio sent ahead of playout; Twilio never buffers more than this."
    )

    # --- voice agent: the agent files and the three vendors (README "Services and keys") ---
    agents_dir: Path = Field(
        Path(__file__).resolve().parent.parent / "agents",
        description="Folder that agent names (agent=...) are resolved in; plain file names only.",
    )
    deepgram_api_key: str | None = Field(None, description="Set: STT is Deepgram; unset: offline pocketsphinx.")
    deepgram_base_url: str = Field(
        "", description="Deepgram listen host (ws://host:port for a stand-in); empty = Deepgram's own."
    )
    deepgram_model: str = "nova-3-general"
    deepgram_endpointing_ms: int | None = Field(
        None, description="Deepgram's own endpointing; None = Pipecat's default (the VAD ends turns)."
    )
    openai_api_key: str | None = Field(
        None, description="Set (or OPENAI_BASE_URL set): the LLM is OpenAI-compatible; unset: the offline script."
    )
    openai_base_url: str | None = Field(
        None, description="Any OpenAI-compatible /v1 URL (Ollama, vLLM, llama.cpp, a stand-in)."
    )
    openai_model: str = Field("gpt-4.1-mini", description="Used when the agent file names no llm_model.")
    llm_timeout_secs: float = Field(8.0, description="Connect/read timeout of one chat-completions request.")
    llm_max_retries: int = Field(1, description="Retries of a failed request (429, 5xx, timeout, refused).")
    cartesia_api_key: str | None = Field(None, description="Set: TTS is Cartesia; unset: offline flite.")
    cartesia_url: str = Field(
        "wss://api.cartesia.ai/tts/websocket", description="Cartesia TTS WebSocket URL (a stand-in in tests)."
    )
    cartesia_model: str = "sonic-3.6"
    cartesia_voice: str = Field(
        "f786b574-daa5-4673-aa0c-cbe3e8534c02", description="Cartesia voice id when the agent file names none."
    )
    offline_stt_workers: int = Field(
        2, ge=1, description="Processes that decode the offline STT (pocketsphinx), per server worker, shared by its calls."
    )
    offline_tts_engine: str = Field("flite", description="Offline TTS: flite (word timings) or espeak-ng.")
    offline_tts_voice: str = Field("rms", description="Offline voice: flite slt|kal|awb|rms, or an espeak-ng voice.")
    vendor_connect_timeout_secs: float = Field(
        2.0, description="How long a call's setup waits for Deepgram's handshake before going on without it."
    )
    vendor_fallback: bool = Field(
        True, description="A failing vendor falls back to the offline STT/TTS; a failing LLM says goodbye."
    )
    stt_errors_before_fallback: int = Field(
        2, description="Deepgram errors (drops, timeouts) in one call before the offline STT takes over."
    )
    tts_errors_before_fallback: int = Field(
        1, description="Cartesia errors in one call before the offline voice takes over."
    )
    llm_errors_before_fallback: int = Field(
        1, description="Failed LLM turns (after llm_max_retries) before the call is ended politely."
    )
    stt_timeout_secs: float = Field(
        2.0, description="No transcript this long after the caller stops talking counts as an STT timeout."
    )
    tts_timeout_secs: float = Field(
        2.0, description="No audio this long after a TTS request counts as a TTS timeout."
    )
    vendor_failure_message: str = Field(
        "I'm sorry, I'm having technical trouble on my end. Someone will call you back shortly. Goodbye.",
        description="What the caller hears when the LLM cannot recover; then the call ends.",
    )
    log_level: str = "INFO"

    # --- security (README "Security") ---------------------------------------------------------------
    api_keys: str = Field(
        "",
        validation_alias=AliasChoices("CALLGATE_API_KEYS", "api_keys"),
        description="Comma-separated bearer keys for the control API (POST /calls, GET /calls..., /docs). "
        "Unset with TWILIO_AUTH_TOKEN set: the control API is refused; unset in dev mode: open on loopback.",
    )
    metrics_keys: str = Field(
        "",
        validation_alias=AliasChoices("CALLGATE_METRICS_KEYS", "metrics_keys"),
        description="Comma-separated bearer keys that may read /metrics only (API keys work too).",
    )
    api_rate_limit: str = Field(
        "120/minute", description="Control-API requests per key (the `limits` syntax: '10/second;120/minute')."
    )
    place_call_rate_limit: str = Field("10/minute", description="POST /calls per key, on top of API_RATE_LIMIT.")
    call_destinations: str = Field(
        "US,CA",
        description="Where POST /calls may call: comma-separated ISO regions (US) and/or E.164 prefixes "
        "(+4420). Premium-rate, shared-cost, personal and unknown numbers are refused whatever this says.",
    )
    allow_dev_mode_public: bool = Field(
        False, description="Let a dev-mode server (no TWILIO_AUTH_TOKEN) bind a non-loopback HOST."
    )
    callback_private_hosts: bool = Field(
        False,
        description="Let POST /calls name an AsyncAmdStatusCallback on a loopback, private or link-local "
        "address (local development). Off: only hosts that resolve to public addresses.",
    )
    twilio_api_timeout_secs: float = Field(10.0, description="Timeout of every call to Twilio's REST API.")
    max_body_bytes: int = Field(16 * 1024, description="Largest HTTP request body (webhook, POST /calls).")
    header_timeout_secs: float = Field(10.0, description="A connection must send its request headers within this.")
    body_timeout_secs: float = Field(10.0, description="A request must send its whole body within this.")
    ws_max_size: int = Field(64 * 1024, description="Largest WebSocket message the server accepts.")
    stream_max_ahead_ms: float = Field(
        1500.0, description="Inbound audio may run this far ahead of real time; more is dropped and counted "
        "(0: unbounded, only for replaying recorded streams faster than real time)."
    )
    stream_max_messages_per_sec: float = Field(
        150.0, description="Messages per second one stream may send (Twilio sends 50 media + a few marks; 0: no cap)."
    )
    stream_violation_secs: float = Field(
        2.0, description="A stream that keeps exceeding the two limits above for this long is closed (1008)."
    )
    max_call_events: int = Field(2000, description="Events kept per call record (more are counted, not kept).")
    token_store_path: Path | None = Field(
        None,
        description="SQLite file remembering redeemed Stream tokens across restarts; unset = the call-record "
        "database (DATABASE_URL), shared by every worker and host that uses it.",
    )
    reject_log_per_minute: int = Field(
        20, description="Rejected requests logged at WARNING per reason per minute; the rest at DEBUG."
    )

    # --- production: call records, drain, workers (README "Production") -------------------------
    database_url: str | None = Field(
        None,
        description="SQLAlchemy async URL of the call-record database: sqlite+aiosqlite:///path or "
        "postgresql+asyncpg://user:pass@host/db. Unset: sqlite+aiosqlite:///callgate.db.",
    )
    db_flush_secs: float = Field(
        0.2, gt=0, le=1.0, description="The record writer flushes queued records at least this often (<= 1 s)."
    )
    db_queue_max: int = Field(
        50_000, ge=100, description="Records queued while the database is unreachable; beyond it they are dropped."
    )
    drain_timeout_secs: float = Field(
        300.0, ge=0, description="After SIGTERM, how long live calls may run on before the process exits anyway."
    )
    drain_action: Literal["reject", "redirect"] = Field(
        "reject", description="What a new call gets while draining: a polite <Say>+<Hangup>, or <Redirect>."
    )
    drain_message: str = Field(
        "Sorry, we cannot take your call right now. Please try again in a few minutes. Goodbye.",
        description="What a caller hears when a draining server turns the call away (drain_action=reject).",
    )
    drain_redirect_url: str | None = Field(
        None, description="drain_action=redirect: the TwiML URL (another instance) new calls are sent to."
    )
    status_callbacks: bool = Field(
        True, description="POST /calls asks Twilio for status callbacks at PUBLIC_BASE_URL/status."
    )

    @field_validator("token_store_path", mode="before")
    @classmethod
    def _empty_is_none(cls, v: object) -> object:
        return None if isinstance(v, str) and not v.strip() else v

    @field_validator("public_base_url")
    @classmethod
    def _strip_slash(cls, v: str) -> str:
        v = v.rstrip("/")
        if v and not v.startswith(("http://", "https://")):
            raise ValueError("PUBLIC_BASE_URL must start with http:// or https://")
        return v

    @model_validator(mode="after")
    def _strong_keys(self) -> Settings:
        short = [k for k in self.api_key_list + self.metrics_key_list if len(k) < 16]
        if short:
            raise ValueError("CALLGATE_API_KEYS / CALLGATE_METRICS_KEYS: every key needs at least 16 characters")
        return self

    @model_validator(mode="after")
    def _default_public_url(self) -> Settings:
        if not self.public_base_url:
            host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
            self.public_base_url = f"http://{host}:{self.port}"
        return self

    @property
    def dev_mode(self) -> bool:
        """True when no Twilio credentials are configured: signatures are not checked."""
        return not self.twilio_auth_token

    @property
    def db_url(self) -> str:
        """DATABASE_URL, or the SQLite file callgate.db in the working directory."""
        return self.database_url or "sqlite+aiosqlite:///callgate.db"

    @property
    def api_key_list(self) -> list[str]:
        return [k.strip() for k in self.api_keys.split(",") if k.strip()]

    @property
    def metrics_key_list(self) -> list[str]:
        return [k.strip() for k in self.metrics_keys.split(",") if k.strip()]

    @property
    def stream_base_url(self) -> str:
        """The ws(s):// form of the public base URL, for <Stream url=...>."""
        return "wss://" + self.public_base_url[len("https://") :] if self.public_base_url.startswith(
            "https://"
        ) else "ws://" + self.public_base_url[len("http://") :]


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings (tests build their own Settings and pass them explicitly)."""
    return Settings()
