"""Settings as a process sees them: the environment variables, passing them on, per-run copies."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import Field, SecretStr

from schemas import Settings
from schemas.api_keys import ApiKeyEntry

#: Every variable a deployment may set, as of the grouping of the settings by concern (the
#: variables of the flat settings class before it, less the chaos-test knob
#: RAGSTREAM_CRASH_BEFORE_COMMIT_PROBABILITY, now schemas.fault_injection's). Renaming a setting
#: breaks every deployment that sets it: change this set only on purpose.
ENV_NAMES = frozenset(
    {
        "RAGSTREAM_ANSWER_EXTRACTIVE_SENTENCES",
        "RAGSTREAM_CONTROL_TOPIC",
        "RAGSTREAM_KAFKA_SECURITY_PROTOCOL",
        "RAGSTREAM_KAFKA_SASL_MECHANISM",
        "RAGSTREAM_KAFKA_SASL_USERNAME",
        "RAGSTREAM_KAFKA_SASL_PASSWORD",
        "RAGSTREAM_KAFKA_SSL_CAFILE",
        "RAGSTREAM_KAFKA_SSL_CERTFILE",
        "RAGSTREAM_KAFKA_SSL_KEYFILE",
        "RAGSTREAM_CHROMA_TOKEN",
        "RAGSTREAM_REINDEX_KEEP_S",
        "RAGSTREAM_REINDEX_NICENESS",
        "RAGSTREAM_ANSWER_GENERATOR",
        "RAGSTREAM_ANSWER_LOCAL_GGUF",
        "RAGSTREAM_ANSWER_MAX_NEW_TOKENS",
        "RAGSTREAM_ANSWER_OPENAI_API_KEY",
        "RAGSTREAM_ANSWER_OPENAI_BASE_URL",
        "RAGSTREAM_ANSWER_OPENAI_MODEL",
        "RAGSTREAM_ANSWER_OPENAI_TIMEOUT_S",
        "RAGSTREAM_ANSWER_TEMPERATURE",
        "RAGSTREAM_ANSWER_TEMPLATE",
        "RAGSTREAM_API_ACCESS_LOG",
        "RAGSTREAM_API_HEALTH_GRACE_S",
        "RAGSTREAM_API_HOST",
        "RAGSTREAM_API_INGRESS",
        "RAGSTREAM_API_KEYS",
        "RAGSTREAM_API_MAX_VIEW_LAG",
        "RAGSTREAM_API_PORT",
        "RAGSTREAM_API_REPLICAS",
        "RAGSTREAM_API_REPLICA_MAX_ONGOING_REQUESTS",
        "RAGSTREAM_API_REPLICA_MEMORY_BYTES",
        "RAGSTREAM_API_REPLICA_NUM_CPUS",
        "RAGSTREAM_BOOTSTRAP_SERVERS",
        "RAGSTREAM_CHANGES_TOPIC",
        "RAGSTREAM_CHROMA_HOST",
        "RAGSTREAM_CHROMA_PORT",
        "RAGSTREAM_CHUNKS_TOPIC",
        "RAGSTREAM_CHUNK_OVERLAP",
        "RAGSTREAM_CHUNK_SIZE",
        "RAGSTREAM_COLLECTION",
        "RAGSTREAM_CONSUMERS_MAX",
        "RAGSTREAM_CONSUMERS_MIN",
        "RAGSTREAM_CONSUMER_ACTIVATION_LAG",
        "RAGSTREAM_CONSUMER_GROUP",
        "RAGSTREAM_CONSUMER_INPUT",
        "RAGSTREAM_CONSUMER_LAG_PER_ACTOR",
        "RAGSTREAM_CONSUMER_MEMORY_BUDGET_BYTES",
        "RAGSTREAM_CONSUMER_MEMORY_BYTES",
        "RAGSTREAM_CONSUMER_NICENESS",
        "RAGSTREAM_CONSUMER_NUM_CPUS",
        "RAGSTREAM_CONSUMER_SCALE_COOLDOWN_S",
        "RAGSTREAM_CONSUMER_SCALE_DOWN_AFTER_S",
        "RAGSTREAM_CONSUMER_SCALE_UP_AFTER_S",
        "RAGSTREAM_DLQ_TOPIC",
        "RAGSTREAM_EMBED_BATCH_SIZE",
        "RAGSTREAM_EVENTS_TOPIC",
        "RAGSTREAM_FEEDBACK_TOPIC",
        "RAGSTREAM_FETCH_MAX_RECORDS",
        "RAGSTREAM_FETCH_TIMEOUT_MS",
        "RAGSTREAM_HYBRID_CANDIDATES",
        "RAGSTREAM_HYBRID_FUSION",
        "RAGSTREAM_HYBRID_LEXICAL_WEIGHT",
        "RAGSTREAM_HYBRID_VECTOR_PRIOR",
        "RAGSTREAM_HYBRID_VECTOR_WEIGHT",
        "RAGSTREAM_LEXICAL_INDEX_DIR",
        "RAGSTREAM_LEXICAL_STARTUP_TIMEOUT_S",
        "RAGSTREAM_LOCAL_VECTORS",
        "RAGSTREAM_LOG_FORMAT",
        "RAGSTREAM_MAX_DOCUMENT_BYTES",
        "RAGSTREAM_MAX_QUEUED_BATCHES",
        "RAGSTREAM_MAX_QUEUED_BYTES",
        "RAGSTREAM_MIN_INSYNC_REPLICAS",
        "RAGSTREAM_MODEL",
        "RAGSTREAM_PARTITIONS",
        "RAGSTREAM_PRECISION",
        "RAGSTREAM_QUERY_BATCH_MAX",
        "RAGSTREAM_QUERY_PRECISION",
        "RAGSTREAM_QUERY_RUNTIME",
        "RAGSTREAM_QUERY_THREADS",
        "RAGSTREAM_RAY_NODES",
        "RAGSTREAM_READ_YOUR_WRITES_TIMEOUT_S",
        "RAGSTREAM_REPLICATION_FACTOR",
        "RAGSTREAM_RERANK",
        "RAGSTREAM_RERANK_DEPTH",
        "RAGSTREAM_RERANK_MODEL",
        "RAGSTREAM_RRF_K",
        "RAGSTREAM_SEARCH_ACTIVITY_FILE",
        "RAGSTREAM_SEARCH_ACTIVITY_WINDOW_S",
        "RAGSTREAM_SNAPSHOT_DIR",
        "RAGSTREAM_SNAPSHOT_INTERVAL_S",
        "RAGSTREAM_SNAPSHOT_KEEP",
        "RAGSTREAM_STAGE_WORKERS",
        "RAGSTREAM_STATE_DIR",
        "RAGSTREAM_STATS_TOPIC",
        "RAGSTREAM_STREAMS_APP_ID",
        "RAGSTREAM_STREAMS_COMMIT_INTERVAL_S",
        "RAGSTREAM_STREAMS_SESSION_TIMEOUT_S",
        "RAGSTREAM_STREAMS_STALL_TIMEOUT_S",
        "RAGSTREAM_STREAMS_STANDBY_REPLICAS",
        "RAGSTREAM_TORCH_THREADS",
        "RAGSTREAM_WATCH_MAX_DELAY_MS",
        "RAGSTREAM_WATCH_SETTLE_MS",
    }
)

DIGEST = "ab" * 32

#: A value other than the default for every setting, each valid.
EVERY_SETTING_CHANGED: dict[str, Any] = {
    "bootstrap_servers": "broker-1:9093,broker-2:9093",
    "events_topic": "t.events",
    "changes_topic": "t.changes",
    "chunks_topic": "t.chunks",
    "dlq_topic": "t.dlq",
    "stats_topic": "t.stats",
    "feedback_topic": "t.feedback",
    "control_topic": "t.control",
    "partitions": 3,
    "replication_factor": 3,
    "min_insync_replicas": 2,
    "max_document_bytes": 1234,
    "kafka_security_protocol": "SASL_SSL",
    "kafka_sasl_mechanism": "SCRAM-SHA-256",
    "kafka_sasl_username": "ragstream",
    "kafka_sasl_password": SecretStr("pa ss,word"),
    "kafka_ssl_cafile": Path("/etc/ragstream/kafka-ca.pem"),
    "kafka_ssl_certfile": Path("/etc/ragstream/client.pem"),
    "kafka_ssl_keyfile": Path("/etc/ragstream/client-key.pem"),
    "chroma_host": "chroma.internal",
    "chroma_port": 8001,
    "chroma_token": SecretStr("chroma-token"),
    "collection": "t-collection",
    "model": "/models/e5-small",
    "precision": "fp32",
    "embed_batch_size": 16,
    "torch_threads": 2,
    "chunk_size": 300,
    "chunk_overlap": 0,
    "consumer_group": "t-indexer",
    "consumer_input": "events",
    "consumer_num_cpus": 0.25,
    "consumer_memory_bytes": 900_000_000,
    "consumer_niceness": 0,
    "search_activity_file": Path("/run/ragstream/searching"),
    "search_activity_window_s": 3.5,
    "fetch_max_records": 64,
    "fetch_timeout_ms": 50,
    "max_queued_batches": 4,
    "max_queued_bytes": 1_000_000,
    "consumers_min": 2,
    "consumers_max": 6,
    "consumer_lag_per_actor": 100,
    "consumer_activation_lag": 0,
    "consumer_scale_up_after_s": 0.5,
    "consumer_scale_down_after_s": 5.0,
    "consumer_scale_cooldown_s": 1.0,
    "consumer_memory_budget_bytes": 8_000_000_000,
    "streams_app_id": "t-changes",
    "stage_workers": 3,
    "streams_session_timeout_s": 6.0,
    "streams_commit_interval_s": 0.05,
    "streams_stall_timeout_s": 12.5,
    "streams_standby_replicas": 0,
    "watch_settle_ms": 100,
    "watch_max_delay_ms": 1000,
    "api_host": "0.0.0.0",
    "api_port": 9090,
    "api_access_log": True,
    "api_replicas": 0,
    "api_ingress": "proxy",
    "api_replica_num_cpus": 1.5,
    "api_replica_memory_bytes": 3_000_000_000,
    "api_replica_max_ongoing_requests": 8,
    "api_max_view_lag": 10,
    "api_health_grace_s": 2.0,
    "read_your_writes_timeout_s": 0.0,
    "api_keys": (ApiKeyEntry(DIGEST, None), ApiKeyEntry(DIGEST[::-1], "acme")),
    "query_runtime": "torch",
    "query_threads": 2,
    "query_precision": "int8",
    "query_batch_max": 4,
    "hybrid_fusion": "rrf",
    "hybrid_vector_prior": 0.1,
    "hybrid_vector_weight": 2.5,
    "hybrid_lexical_weight": 0.0,
    "hybrid_candidates": 2000,
    "rrf_k": 5,
    "rerank": True,
    "rerank_model": "nanoranker",
    "rerank_depth": 7,
    "local_vectors": False,
    "lexical_index_dir": Path("/var/lib/ragstream/bm25"),
    "lexical_startup_timeout_s": 0.0,
    "snapshot_dir": Path("relative/snapshots"),
    "snapshot_interval_s": 0.1,
    "snapshot_keep": 5,
    "reindex_keep_s": 60.0,
    "reindex_niceness": 5,
    "answer_generator": "openai",
    "answer_template": "grounded.v2",
    "answer_max_new_tokens": 4096,
    "answer_temperature": 0.7,
    "answer_local_gguf": Path("/models/tiny.gguf"),
    "answer_openai_base_url": "http://127.0.0.1:11434/v1",
    "answer_openai_model": "qwen2.5:0.5b",
    "answer_openai_api_key": SecretStr('sk-a,b "quoted" =='),
    "answer_openai_timeout_s": 1e-3,
    "answer_extractive_sentences": 10,
    "log_format": "json",
    "state_dir": Path("/tmp/ragstream state"),
    "ray_nodes": 2,
}


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No RAGSTREAM_* variable from the machine running the tests."""
    import os

    for name in [name for name in os.environ if name.startswith("RAGSTREAM_")]:
        monkeypatch.delenv(name)
    return monkeypatch


def from_env(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], cls: type[Settings] = Settings
) -> Settings:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return cls()


def test_every_setting_is_listed_with_a_value_that_is_not_its_default() -> None:
    assert EVERY_SETTING_CHANGED.keys() == Settings.model_fields.keys()
    defaults = Settings.model_construct()
    same = [name for name, value in EVERY_SETTING_CHANGED.items() if getattr(defaults, name) == value]
    assert not same


def test_every_setting_passes_through_to_env_and_back_under_its_frozen_variable_name(clean_env) -> None:
    settings = Settings(**EVERY_SETTING_CHANGED)
    env = settings.to_env()
    assert env.keys() == ENV_NAMES
    assert from_env(clean_env, env) == settings


def test_the_defaults_pass_through_to_env_and_back(clean_env) -> None:
    settings = Settings()
    assert from_env(clean_env, settings.to_env()) == settings


def test_a_setting_at_none_is_left_out_of_the_environment(clean_env) -> None:
    env = Settings(snapshot_dir=None, answer_openai_api_key=None).to_env()
    assert "RAGSTREAM_SNAPSHOT_DIR" not in env
    assert "RAGSTREAM_ANSWER_OPENAI_API_KEY" not in env


def test_to_env_writes_variables_as_a_shell_would_set_them() -> None:
    env = Settings(**EVERY_SETTING_CHANGED).to_env()
    assert env["RAGSTREAM_API_ACCESS_LOG"] == "true"
    assert env["RAGSTREAM_LOCAL_VECTORS"] == "false"
    assert env["RAGSTREAM_ANSWER_OPENAI_API_KEY"] == 'sk-a,b "quoted" =='
    assert env["RAGSTREAM_API_KEYS"] == f"sha256:{DIGEST},sha256:{DIGEST[::-1]}@acme"
    assert env["RAGSTREAM_STATE_DIR"] == "/tmp/ragstream state"


class _StructuredSettings(Settings):
    tags: tuple[str, ...] = ()
    limits: dict[str, int] = Field(default_factory=dict)


def test_structured_settings_pass_through_to_env_as_json(clean_env) -> None:
    settings = _StructuredSettings(tags=("a", "b, c"), limits={"x": 1})
    env = settings.to_env()
    assert env["RAGSTREAM_TAGS"] == '["a", "b, c"]'
    assert from_env(clean_env, env, _StructuredSettings) == settings


def test_a_setting_the_environment_cannot_carry_is_an_error_not_left_out() -> None:
    from typing import Annotated

    from pydantic_settings import NoDecode

    class Undecodable(Settings):
        hosts: Annotated[tuple[str, ...], NoDecode] = ()

    with pytest.raises(TypeError, match="hosts"):
        Undecodable(hosts=("a",)).to_env()


def test_max_record_bytes_holds_a_largest_document_with_a_mebibyte_of_envelope() -> None:
    assert Settings(max_document_bytes=1000).max_record_bytes == 1000 + 1024 * 1024
    assert Settings().max_record_bytes > Settings().max_document_bytes


def test_namespaced_gives_topics_groups_and_collection_of_their_own() -> None:
    base = Settings(partitions=2, chunk_size=300, bootstrap_servers="broker:9092")
    run = base.namespaced("faults-1a2b3c4d")
    assert run.collection == "faults-1a2b3c4d"
    assert (run.events_topic, run.changes_topic, run.chunks_topic) == (
        "faults-1a2b3c4d.events",
        "faults-1a2b3c4d.changes",
        "faults-1a2b3c4d.chunks",
    )
    assert (run.dlq_topic, run.stats_topic, run.feedback_topic) == (
        "faults-1a2b3c4d.dlq",
        "faults-1a2b3c4d.stats",
        "faults-1a2b3c4d.feedback",
    )
    assert run.consumer_group == "faults-1a2b3c4d-indexer"
    assert run.streams_app_id == "faults-1a2b3c4d-changes"
    assert (run.partitions, run.chunk_size, run.bootstrap_servers) == (2, 300, "broker:9092")
    assert base.collection == "ragstream"


def test_two_namespaces_share_no_topic_group_or_collection() -> None:
    names = (
        "collection",
        *[name for name in Settings.model_fields if name.endswith("_topic")],
        "consumer_group",
        "streams_app_id",
    )
    one, other = Settings().namespaced("run-one"), Settings().namespaced("run-two")
    assert not {getattr(one, n) for n in names} & {getattr(other, n) for n in names}


def test_namespaced_keeps_secrets_and_keys() -> None:
    base = Settings(api_keys=(ApiKeyEntry(DIGEST, "acme"),), answer_openai_api_key=SecretStr("sk-1"))
    run = base.namespaced("keys-run")
    assert run.api_keys == base.api_keys
    assert run.answer_openai_api_key == SecretStr("sk-1")


@pytest.mark.parametrize("prefix", ["x", "has space", "-leading", "a" * 241])
def test_namespaced_refuses_a_prefix_that_is_no_collection_or_topic_name(prefix: str) -> None:
    with pytest.raises(ValueError):
        Settings().namespaced(prefix)
