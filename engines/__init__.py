"""What the writer (consumers/) and the reader (query_api/) both run: the embedding model (torch,
and ONNX for queries), the chunker, and the Chroma collection. Imports nothing of ours but schemas."""
