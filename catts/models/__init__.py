"""Model backends behind one protocol (``catts.models.backend``), and the embedded tiny models."""

from __future__ import annotations

from pathlib import Path

from catts.models.backend import Backend, Prompt, SamplingParams, Trace

EMBEDDED_MODELS = ("tiny", "tiny-cdrl", "tiny-expert")
WEIGHTS_DIR = Path(__file__).parent / "tiny" / "weights"

__all__ = ["Backend", "Prompt", "SamplingParams", "Trace", "EMBEDDED_MODELS", "resolve_model_path", "load_backend"]


def resolve_model_path(model: str | Path) -> Path:
    """An embedded model's folder, or a local model folder; a clear error otherwise (no hub downloads)."""
    if str(model) in EMBEDDED_MODELS:
        path = WEIGHTS_DIR / str(model)
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"embedded model {model!r} has no weights at {path}; run `catts tiny train {model}`")
        return path
    path = Path(model).expanduser()
    if not (path / "config.json").exists():
        raise FileNotFoundError(
            f"model {model!r}: not an embedded model ({', '.join(EMBEDDED_MODELS)}) and not a local folder with a "
            "config.json; catts never downloads weights, so download the checkpoint first")
    return path


def load_backend(model: str | Path, **kwargs) -> Backend:
    """The backend for ``model``: ``openai:NAME`` with ``base_urls=[...]`` for an OpenAI-compatible server
    (vLLM, SGLang, an API), else the transformers backend (local folders and embedded models)."""
    from catts.models.openai_backend import OpenAIBackend, is_openai

    base_urls = kwargs.pop("base_urls", ())
    if is_openai(str(model)):
        return OpenAIBackend(str(model), base_urls, **{k: v for k, v in kwargs.items()
                                                       if k in ("max_pixels", "batch_size")})
    from catts.models.hf import TransformersBackend

    return TransformersBackend(model, **kwargs)
