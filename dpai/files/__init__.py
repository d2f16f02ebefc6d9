"""Files that are never half-written: atomic writes, and resumable checkpoints keyed by
everything their computation depends on."""
from .atomic import atomic_write, clean_stale, write_json, write_text, write_torch
from .checkpoint import Checkpoint, digest, file_digest, source_digest

__all__ = ["atomic_write", "clean_stale", "write_json", "write_text", "write_torch",
           "Checkpoint", "digest", "file_digest", "source_digest"]
