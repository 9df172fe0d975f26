"""LLM4DSR (specs/llm4dsr.md) as a package of small modules:

``data`` (units, prompts, self-supervised instruction data), ``model`` (loading and batched
passes of a Hugging Face causal LM), ``finetune`` (LoRA with peft, resumable),
``uncertainty`` (first-token noise probabilities, quantile threshold, top-b selection),
``grounding`` (suggestions and mapping them to catalogue items) and ``denoiser`` (the
registered ``llm4dsr`` data-level denoiser). Heavy libraries (transformers, peft) are imported
only when the denoiser runs.
"""
from denoisers.llm4dsr.denoiser import LLM4DSR, LLM4DSRConfig

__all__ = ["LLM4DSR", "LLM4DSRConfig"]
