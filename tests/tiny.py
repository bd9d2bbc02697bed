"""Tiny random causal LMs and a character-level ChatML tokenizer, built in process (no
download): what tests use wherever a model is needed."""

from __future__ import annotations

import string
from typing import Any

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL = ["<pad>", "<|im_start|>", "<|im_end|>", "<unk>"]
PAD, BOS, EOS = 0, 1, 2  # ids of <pad>, <|im_start|>, <|im_end|>
SPACE = "\u2581"  # SentencePiece's word boundary

# model_type -> (config class, model class) in transformers; the tiny shape below fits each
ARCHITECTURES: dict[str, tuple[str, str]] = {
    "llama": ("LlamaConfig", "LlamaForCausalLM"),  # Open LLaMA, SmolLM2
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM"),
    "gemma3_text": ("Gemma3TextConfig", "Gemma3ForCausalLM"),
    "falcon": ("FalconConfig", "FalconForCausalLM"),
    "stablelm": ("StableLmConfig", "StableLmForCausalLM"),
    "gpt_neox": ("GPTNeoXConfig", "GPTNeoXForCausalLM"),  # Pythia
    "phi": ("PhiConfig", "PhiForCausalLM"),
}
# what each architecture needs beyond the shared shape (names as its config class spells them)
_OWN: dict[str, dict[str, Any]] = {
    "llama": {"num_key_value_heads": 2},
    "qwen2": {"num_key_value_heads": 2},
    "gemma3_text": {"num_key_value_heads": 2, "head_dim": 16, "sliding_window": 16},
    "falcon": {"new_decoder_architecture": False, "multi_query": True, "parallel_attn": True},
    "stablelm": {"num_key_value_heads": 4},
    "gpt_neox": {},
    "phi": {"num_key_value_heads": 4},
}


def tiny_tokenizer(chat_template: bool = True, sentencepiece: bool = False) -> Any:
    """Characters as tokens; the ChatML template unless ``chat_template`` is False (a base
    model's tokenizer: prompts are plain text). ``sentencepiece`` tokenizes as Llama's
    SentencePiece tokenizers do (Open LLaMA): spaces become ``▁``, the text's first word gets a
    ``▁`` in front (so "pos" alone is not "pos" after a newline), and a BOS token starts it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    chars = sorted(set(string.printable) | set("§é") | (set(SPACE) if sentencepiece else set()))
    vocab = {tok: i for i, tok in enumerate(SPECIAL + chars)}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    split = pre_tokenizers.Split("", behavior="isolated")
    if sentencepiece:
        first = pre_tokenizers.Metaspace(replacement=SPACE, prepend_scheme="first", split=False)
        core.pre_tokenizer = pre_tokenizers.Sequence([first, split])
        core.decoder = decoders.Sequence(
            [decoders.Replace(SPACE, " "), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
        )
        core.post_processor = processors.TemplateProcessing(
            single="<|im_start|> $A", pair="<|im_start|> $A $B", special_tokens=[(SPECIAL[1], BOS)]
        )
    else:
        core.pre_tokenizer = split
        core.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="<pad>",
        eos_token="<|im_end|>",
        unk_token="<unk>",
        bos_token="<|im_start|>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
    )
    if chat_template:
        tok.chat_template = CHATML
    return tok


def tiny_config(architecture: str, vocab_size: int) -> Any:
    """A random-weights config of ``architecture`` (a model_type of ``ARCHITECTURES``): hidden
    size 64, 2 layers, 4 heads, the tokenizer's vocabulary."""
    import transformers

    config_class = getattr(transformers, ARCHITECTURES[architecture][0])
    return config_class(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=1024,
        pad_token_id=PAD,
        bos_token_id=BOS,
        eos_token_id=EOS,
        **_OWN[architecture],
    )


def tiny_model(architecture: str, vocab_size: int, seed: int = 0) -> Any:
    """A tiny random causal LM of ``architecture`` (see ``tiny_config``)."""
    import torch
    import transformers

    torch.manual_seed(seed)
    model_class = getattr(transformers, ARCHITECTURES[architecture][1])
    return model_class(tiny_config(architecture, vocab_size))


def tiny_llama(vocab_size: int, seed: int = 0) -> Any:
    return tiny_model("llama", vocab_size, seed)
