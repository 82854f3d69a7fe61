"""Data loading, tokenization and batching for every task kind."""
