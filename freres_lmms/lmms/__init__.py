"""lmms-eval integration: thin wrappers and the entry-point manifests."""
