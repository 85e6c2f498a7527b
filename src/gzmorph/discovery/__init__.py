"""Discovery: invariant embeddings, similarity search, anomaly ranking (extra ``discovery`` for faiss)."""
