"""A second real embedding model, of another dimension, made offline from the one we ship.

Nothing else can be downloaded here, so a test that changes the model (and with it the vectors'
dimension) builds one: all-MiniLM-L6-v2 followed by a fixed linear projection from 384 to
``SECOND_MODEL_DIMENSION`` dimensions (the first rows of a seeded random orthogonal matrix, which
keeps the geometry of the vectors roughly as it was) and a normalisation, saved as a
sentence-transformers model directory. It loads like any model given by path.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["SECOND_MODEL_DIMENSION", "save_second_model"]

SECOND_MODEL_DIMENSION = 192


def save_second_model(directory: Path) -> str:
    """Write the model under ``directory``; its path, as ``--model`` or ``RAGSTREAM_MODEL`` takes it."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Dense, Normalize

    from engines.embedder import DEFAULT_MODEL, resolve_model_path

    base = SentenceTransformer(resolve_model_path(DEFAULT_MODEL), device="cpu")
    source = int(base.get_embedding_dimension() or 0)
    generator = torch.Generator().manual_seed(7)
    rotation, _ = torch.linalg.qr(torch.randn(source, source, generator=generator))
    projection = Dense(
        source,
        SECOND_MODEL_DIMENSION,
        bias=False,
        activation_function=torch.nn.Identity(),
        init_weight=rotation[:SECOND_MODEL_DIMENSION].contiguous(),
    )
    model = SentenceTransformer(modules=[*base, projection, Normalize()], device="cpu")
    path = directory / f"minilm-projected-{SECOND_MODEL_DIMENSION}"
    model.save(str(path))
    return str(path)
