"""Ray: the local head or a cluster, and the batch generation job (Ray Data LLM)."""
