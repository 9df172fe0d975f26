"""A tiny, randomly initialised Llama (causal LM + fast tokenizer) built locally for tests.

``build_tiny_llama(directory)`` writes a Hugging Face model directory that loads offline with
``AutoModel`` / ``AutoModelForCausalLM`` / ``AutoTokenizer`` and works with ``llm2vec.LLM2Vec``
(the tokenizer declares ``model_input_names=["input_ids", "attention_mask"]``, so no
``token_type_ids`` reach the Llama forward). It takes about a second and is deterministic:
the tokenizer is a byte-level BPE trained on a fixed corpus, and the weights are drawn from a
fixed seed without touching the caller's global RNG state.

Sizes: hidden 32, 2 layers, 2 heads, intermediate 64, context 1,024 tokens, vocabulary
≈ 400 tokens (256 byte symbols + merges + 4 special tokens).
"""
from __future__ import annotations

import itertools
from pathlib import Path

HIDDEN_SIZE = 32
SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>"]

_WORDS = (
    "the a an and of for with in on to by from new pack set size oz ml color black white red blue "
    "green pink gold silver natural organic fresh daily gentle deep soft light dark matte shine "
    "cream lotion serum gel oil soap shampoo conditioner mask scrub cleanser toner mist spray "
    "powder foundation concealer lipstick gloss liner mascara palette brush sponge nail polish "
    "remover perfume cologne deodorant sunscreen spf moisturizer hair skin face eye lip body hand "
    "foot game console controller puzzle card board toy doll car truck train block ball kit "
    "sport shoe bag bottle glove helmet bike tent pro max mini ultra classic original travel"
).split()


def _corpus() -> list[str]:
    """A fixed corpus of a few hundred words: the product words above plus syllable compounds."""
    syllables = ["ka", "lo", "mi", "ra", "tu", "ne", "sa", "vo", "pe", "di", "zu", "qua"]
    compounds = ["".join(pair) for pair in itertools.product(syllables, repeat=2)]
    words = _WORDS + compounds
    # Sentences of 8 words cycling through the list, so merges see word boundaries.
    return [" ".join(words[i : i + 8]) for i in range(0, len(words), 8)] * 3 + [
        "0 1 2 3 4 5 6 7 8 9 10 12 16 24 32 50 100 , . ! ? - & ( ) / : ;"
    ]


def build_tokenizer(directory: str | Path):
    """Train the byte-level BPE tokenizer and save it as a ``PreTrainedTokenizerFast``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        min_frequency=1,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    bos_id = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos_id)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        model_input_names=["input_ids", "attention_mask"],
        clean_up_tokenization_spaces=False,
    )
    fast.save_pretrained(str(directory))
    return fast


def build_tiny_llama(directory: str | Path, seed: int = 0) -> Path:
    """Write a tiny ``LlamaForCausalLM`` and its tokenizer into ``directory``; return the path.

    The directory is created if needed. The model is in float32, saved as safetensors, with
    ``bos``/``eos``/``pad`` token ids set in its config and generation config.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(path)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=HIDDEN_SIZE,
        intermediate_size=2 * HIDDEN_SIZE,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        torch_dtype="float32",
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(str(path), safe_serialization=True)
    return path
