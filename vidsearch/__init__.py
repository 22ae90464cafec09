"""vidsearch: index a video library with VideoMAE embeddings; search by example; find near-duplicates.

The public API is imported lazily so that ``vidsearch --help`` does not load torch.
"""

__version__ = "0.1.0"

_API = {
    "open_library": "vidsearch.storage.stats",
    "index_paths": "vidsearch.indexer.job",
    "IndexOptions": "vidsearch.indexer.job",
    "IndexSummary": "vidsearch.indexer.job",
    "remove_paths": "vidsearch.indexer.job",
    "index_on_ray": "vidsearch.indexer.ray_job",
    "RayOptions": "vidsearch.indexer.ray_job",
    "search_video": "vidsearch.search.query",
    "SearchResult": "vidsearch.search.query",
    "library_stats": "vidsearch.storage.stats",
    "decide": "vidsearch.storage.decisions",
    "list_decisions": "vidsearch.storage.decisions",
    "undo_decision": "vidsearch.storage.decisions",
    "load_encoder": "vidsearch.model.encoder",
    "errors": "vidsearch.errors",
}

__all__ = ["__version__", *_API]


def __getattr__(name):
    if name not in _API:
        raise AttributeError(f"module 'vidsearch' has no attribute {name!r}")
    import importlib

    module = importlib.import_module(_API[name])
    return module if name == "errors" else getattr(module, name)
