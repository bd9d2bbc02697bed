"""Local GGUF models through llama-cpp-python: the embedded default, fast on a laptop CPU.

Label scoring: the prompt is evaluated once (and its shared prefix with the previous prompt is
kept in the KV cache, so a batch of records with one instruction prefix pays for it once).
When the choices start with different tokens, the next-token distribution at the end of the
prompt decides among them, as a decoder constrained to the choices would: no further
evaluation. Otherwise each choice's tokens, followed by the end-of-turn token, are scored by
rewinding to the end of the prompt, giving the log-probability of each whole answer.

Many records at once (``score_choices_batch``, what ``tuneloop annotate`` uses): the prompts'
shared prefix is evaluated once into sequence 0 of a second context, each record gets its own
sequence that shares those cells, and all the records' remaining tokens go through the model in
one decode call, with logits kept only at each record's last token. A CPU evaluates a few
hundred tokens in one matrix product faster than thirty at a time, so this is about 1.3x faster
than one record after another with the same prefix reuse. The prefix stays in sequence 0 from
one batch to the next, so a run pays for its instruction once.

On an x86 CPU with 8-bit dot-product instructions (VNNI), for the architectures it runs
(Llama, Qwen2), batches go to ``torch_scorer.TorchScorer`` instead: the same file's weights in
8 bits, 2.7-3.4x faster than llama.cpp's batched scoring of the 4-bit file in the benchmark
(``bench/annotate.py``). ``scorer`` chooses: ``auto`` (that, else llama.cpp), ``torch`` (the
torch scorer wherever PyTorch multiplies int8 matrices, an error elsewhere) or ``llamacpp``;
``TUNELOOP_SCORER`` sets it for every command.

One model instance runs one call at a time (the engine is told ``max_concurrency`` 1).
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tuneloop.llm.types import ChoiceScores, Completion, GenParams, Message, ProviderError

# how batches of records are scored: "auto" (the torch scorer where it runs, else llama.cpp),
# "torch" (8-bit PyTorch, see torch_scorer.py; an error where it cannot run) or "llamacpp"
SCORERS = ("auto", "torch", "llamacpp")


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    top = float(np.max(logits))
    return logits - top - float(np.log(np.sum(np.exp(logits - top))))


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


@dataclass
class _Item:
    """One record of a batch: its prompt tokens and each choice's first token."""

    index: int
    tokens: list[int]
    firsts: dict[str, int]


def _groups(
    items: list[_Item], max_seqs: int, n_batch: int, n_ctx: int
) -> list[tuple[int, list[_Item]]]:
    """Consecutive items in groups that fit one evaluation (``max_seqs`` records, ``n_batch``
    tokens after their shared prefix) and the context, each with the length of the prefix its
    prompts share (never a prompt's last token)."""
    out: list[tuple[int, list[_Item]]] = []
    group: list[_Item] = []
    shared = 0
    for item in items:
        if not group:
            group, shared = [item], len(item.tokens) - 1
            continue
        common = min(shared, _common_prefix(group[0].tokens, item.tokens))
        common = min(common, len(item.tokens) - 1)
        rest = sum(len(g.tokens) - common for g in group) + len(item.tokens) - common
        if len(group) < max_seqs and rest <= n_batch and common + rest < n_ctx:
            group.append(item)
            shared = common
        else:
            out.append((shared, group))
            group, shared = [item], len(item.tokens) - 1
    if group:
        out.append((shared, group))
    return out


class _BatchScorer:
    """A second llama.cpp context over the same weights, with one KV sequence per record of a
    batch plus sequence 0 for the prefix the batch shares (kept between batches)."""

    name = "llama.cpp"

    def __init__(self, llm: Any, max_seqs: int, n_batch: int):
        import llama_cpp

        self._lib = llama_cpp  # kept: freeing may happen while the interpreter shuts down
        # the model's own context settings (threads, attention, cache types), copied
        params = type(llm.context_params).from_buffer_copy(llm.context_params)
        max_seqs = min(max_seqs, llama_cpp.llama_max_parallel_sequences() - 1)
        params.n_batch = n_batch
        params.n_seq_max = max_seqs + 1
        params.kv_unified = True  # the records' sequences share the prefix's cells
        # flash attention (llama.cpp decides: on where the backend has it) keeps a batch of many
        # sequences over one shared cache fast; without it batching gains nothing on a CPU
        params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_AUTO
        ctx = llama_cpp.llama_init_from_model(llm.model, params)
        if not ctx:
            raise ProviderError("llama.cpp could not create a context for batched scoring")
        self.ctx = ctx
        self.mem = llama_cpp.llama_get_memory(ctx)
        self.batch = llama_cpp.llama_batch_init(n_batch, 0, 1)
        self.n_ctx, self.n_batch, self.max_seqs = llm.n_ctx(), n_batch, max_seqs
        self.n_vocab = llm.n_vocab()
        self.held: list[int] = []  # the tokens sequence 0 holds

    def free(self) -> None:
        if self.ctx is not None:
            self._lib.llama_batch_free(self.batch)
            self._lib.llama_free(self.ctx)
            self.ctx = None

    def _decode(self, tokens: Sequence[tuple[int, int, int, bool]]) -> None:
        """Evaluate (token, position, sequence, wants logits) entries in one decode call."""
        llama_cpp = self._lib
        b = self.batch
        b.n_tokens = len(tokens)
        for j, (token, pos, seq, want) in enumerate(tokens):
            b.token[j] = token
            b.pos[j] = pos
            b.n_seq_id[j] = 1
            b.seq_id[j][0] = seq
            b.logits[j] = want
        code = llama_cpp.llama_decode(self.ctx, b)
        if code != 0:
            self.held = []
            llama_cpp.llama_memory_clear(self.mem, True)
            raise ProviderError(f"llama.cpp decode failed (code {code}) on a batch of records")

    def score(
        self, shared: int, prompts: Sequence[Sequence[int]], exact: Sequence[int] = ()
    ) -> list[np.ndarray]:
        """The next-token log-probabilities after each prompt; the first ``shared`` tokens are
        the same in every prompt. (``exact``, the tokens the caller reads, matters to the torch
        scorer only: every log-probability here is exact.)"""
        llama_cpp = self._lib
        prefix = list(prompts[0][:shared])
        keep = _common_prefix(self.held, prefix)
        llama_cpp.llama_memory_seq_rm(self.mem, 0, keep, -1)
        self.held = self.held[:keep]
        for start in range(keep, shared, self.n_batch):
            chunk = prefix[start : start + self.n_batch]
            self._decode([(t, start + i, 0, False) for i, t in enumerate(chunk)])
        self.held = prefix
        entries: list[tuple[int, int, int, bool]] = []
        outputs: list[int] = []
        for seq, prompt in enumerate(prompts, start=1):
            llama_cpp.llama_memory_seq_rm(self.mem, seq, -1, -1)
            llama_cpp.llama_memory_seq_cp(self.mem, 0, seq, -1, -1)
            last = len(prompt) - 1
            entries += [(prompt[p], p, seq, p == last) for p in range(shared, last + 1)]
            outputs.append(len(entries) - 1)
        try:
            self._decode(entries)
            found = []
            for j in outputs:
                ptr = llama_cpp.llama_get_logits_ith(self.ctx, j)
                logits = np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))
                found.append(_log_softmax(logits.astype(np.float64)))
            return found
        finally:
            for seq in range(1, len(prompts) + 1):
                llama_cpp.llama_memory_seq_rm(self.mem, seq, -1, -1)


class LlamaCppProvider:
    kind = "llamacpp"

    def __init__(
        self,
        model: str,
        path: Path,
        *,
        chat_template: str = "gguf",
        context_length: int = 4096,
        n_ctx: int | None = None,
        n_threads: int | None = None,
        n_batch: int = 512,
        batch_records: int = 16,
        batch_tokens: int | None = None,
        scorer: str = "auto",
        scorer_cache: Path | None = None,
    ) -> None:
        from tuneloop.llm.providers.llamacpp_runtime import open_llama

        if scorer not in SCORERS:
            raise ProviderError(f"unknown scorer {scorer!r}: choose one of {', '.join(SCORERS)}")
        self.model = model
        self.path = Path(path)
        self.batch_records = batch_records  # most records in one evaluation (0: never batch)
        self.batch_tokens = batch_tokens  # most tokens in one evaluation (None: the scorer's)
        self.scorer = scorer
        self.scorer_cache = scorer_cache
        self._batcher: Any = None  # _BatchScorer or torch_scorer.TorchScorer, made on first use
        self.llm = open_llama(
            model_path=str(self.path),
            n_ctx=n_ctx or min(context_length, 4096),
            n_threads=n_threads or os.cpu_count() or 1,
            n_batch=n_batch,
            logits_all=False,
            verbose=False,
        )
        self._formatter: Any = None
        self._end_of_turn: list[int] = []
        template = (
            self.llm.metadata.get("tokenizer.chat_template") if chat_template == "gguf" else None
        )
        if chat_template not in ("gguf", "none"):
            template = chat_template
        if template:
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            eos = self.llm.detokenize([self.llm.token_eos()]).decode("utf-8", "ignore")
            bos = self.llm.detokenize([self.llm.token_bos()]).decode("utf-8", "ignore")
            self._formatter = Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos)
            # the text the template puts after an assistant answer marks the answer complete
            probe = Jinja2ChatFormatter(
                template=template, eos_token=eos, bos_token=bos, add_generation_prompt=False
            )(
                messages=[{"role": "user", "content": "x"}, {"role": "assistant", "content": "§"}]
            ).prompt
            after = probe.split("§", 1)[1] if "§" in probe else ""
            self._end_of_turn = self.llm.tokenize(
                after.strip("\n").encode(), add_bos=False, special=True
            )[:1]
        else:
            self._end_of_turn = [self.llm.token_eos()]

    # -- prompts -------------------------------------------------------------------------

    def prompt_text(self, messages: Sequence[Message]) -> str:
        """The exact text the model reads for these messages (its chat template applied)."""
        if self._formatter is None:
            return "\n\n".join(m["content"] for m in messages) + "\n"
        return str(self._formatter(messages=list(messages)).prompt)

    def _tokens(self, text: str) -> list[int]:
        return list(
            self.llm.tokenize(text.encode("utf-8"), add_bos=self._formatter is None, special=True)
        )

    def _answer(self, choice: str) -> list[int]:
        """The tokens of ``choice`` as the assistant's whole answer (end of turn included)."""
        tokens = self.llm.tokenize(choice.encode("utf-8"), add_bos=False, special=False)
        return list(tokens) + self._end_of_turn

    def _eval_prompt(self, tokens: list[int]) -> None:
        """Evaluate ``tokens``, reusing the longest prefix already in the KV cache."""
        if len(tokens) >= self.llm.n_ctx():
            raise ProviderError(
                f"prompt of {len(tokens)} tokens does not fit the context of {self.llm.n_ctx()}"
            )
        cached = self.llm.input_ids[: self.llm.n_tokens].tolist()
        keep = _common_prefix(cached, tokens[:-1])  # always re-run the last token
        self.llm.n_tokens = keep
        self.llm.eval(tokens[keep:])

    def _last_logprobs(self) -> np.ndarray:
        """Log-probabilities of the next token after the last evaluated one."""
        import llama_cpp

        ptr = llama_cpp.llama_get_logits(self.llm.ctx)
        logits = np.ctypeslib.as_array(ptr, shape=(self.llm.n_vocab(),))
        return _log_softmax(logits.astype(np.float64))

    # -- the Provider Protocol -----------------------------------------------------------

    def chat(self, messages: Sequence[Message], params: GenParams) -> Completion:
        text = self.prompt_text(messages)
        self.llm.reset()  # generation keeps its own prefix cache; start it from a clean state
        out: Any = self.llm.create_completion(
            prompt=text,
            max_tokens=params.max_tokens,
            temperature=params.temperature,
            top_p=params.top_p,
            seed=params.seed,
            stop=list(params.stop) or None,
        )
        choice = out["choices"][0]
        usage = out.get("usage", {})
        return Completion(
            choice["text"].strip(),
            usage.get("prompt_tokens"),
            usage.get("completion_tokens"),
            choice.get("finish_reason"),
        )

    def score_choices(
        self, messages: Sequence[Message], choices: Sequence[str]
    ) -> ChoiceScores | None:
        prompt = self._tokens(self.prompt_text(messages))
        self._eval_prompt(prompt)
        end = len(prompt)
        first = self._last_logprobs()
        answers = {c: self._answer(c) for c in choices}
        firsts = [a[0] for a in answers.values()]
        if len(set(firsts)) == len(firsts):
            # The first token already tells the choices apart, so a decoder constrained to
            # the choices decides there: score the choices by it, with no further evaluation.
            logprobs = {c: float(first[a[0]]) for c, a in answers.items()}
            return ChoiceScores(logprobs, len(prompt), {"scored": "first token"})
        logprobs = {}
        for choice, answer in answers.items():
            total = float(first[answer[0]])
            self.llm.n_tokens = end
            for i, token in enumerate(answer[:-1]):
                self.llm.eval([token])
                total += float(self._last_logprobs()[answer[i + 1]])
            logprobs[choice] = total
        self.llm.n_tokens = end
        return ChoiceScores(logprobs, len(prompt), {"scored": "whole answer"})

    def score_choices_batch(
        self, items: Sequence[tuple[Sequence[Message], Sequence[str]]]
    ) -> list[ChoiceScores | None] | None:
        """``score_choices`` for many prompts, evaluated together (see the module docstring).
        An item whose choices share a first token, or whose prompt does not fit the context,
        is None: score it alone with ``score_choices``."""
        if self.batch_records < 2:
            return None
        out: list[ChoiceScores | None] = [None] * len(items)
        ready: list[_Item] = []
        for index, (messages, choices) in enumerate(items):
            tokens = self._tokens(self.prompt_text(messages))
            firsts = {c: self._answer(c)[0] for c in choices}
            distinct = len(set(firsts.values())) == len(firsts)
            if distinct and 0 < len(tokens) < self.llm.n_ctx():
                ready.append(_Item(index, tokens, firsts))
        if not ready:
            return out
        if self._batcher is None:
            self._batcher = self._make_batcher()
        batcher = self._batcher
        n_ctx = self.llm.n_ctx()
        for shared, group in _groups(ready, batcher.max_seqs, batcher.n_batch, n_ctx):
            wanted = sorted({t for item in group for t in item.firsts.values()})
            scores = batcher.score(shared, [item.tokens for item in group], wanted)
            for item, logprobs in zip(group, scores, strict=True):
                out[item.index] = ChoiceScores(
                    {c: float(logprobs[t]) for c, t in item.firsts.items()},
                    len(item.tokens),
                    {"scored": "first token", "batched": len(group), "scorer": batcher.name},
                )
        return out

    def _torch_unsupported(self) -> str | None:
        """Why the torch scorer cannot (or, under ``auto``, should not) run this model file on
        this machine; None: it can."""
        architecture = str(self.llm.metadata.get("general.architecture", ""))
        try:
            from tuneloop.llm.providers import torch_scorer
        except ImportError as exc:
            return f"its packages are missing ({exc})"
        if architecture not in torch_scorer.ARCHITECTURES:
            return f"architecture {architecture or 'unknown'!r} is not one it runs"
        if not torch_scorer.int8_available():
            return "this PyTorch has no int8 matrix product on the CPU"
        if self.scorer == "auto" and not torch_scorer.fast_int8():
            return "this CPU has no 8-bit dot-product instructions (VNNI)"
        return None

    def _torch_batcher(self) -> Any:
        """The torch scorer: converted weights from the cache, else converted now (announced).
        Under ``auto``, a ProviderError when the memory it needs is not available."""
        from tuneloop.llm.providers import torch_scorer

        cache = self.scorer_cache or Path(tempfile.gettempdir()) / "tuneloop"
        folder = torch_scorer.cache_folder(self.path, cache)
        converted = (folder / "model.safetensors").is_file()
        need, free = (
            torch_scorer.memory_needed(self.path, converted),
            torch_scorer.available_memory(),
        )
        if self.scorer == "auto" and free is not None and free < need:
            raise ProviderError(
                f"{'it' if converted else 'converting the model file'} needs about "
                f"{need / 2**30:.1f} GB of memory and {free / 2**30:.1f} GB is available"
            )
        if not converted:
            sys.stderr.write(
                f"tuneloop: converting {self.path.name} to 8 bits for batched label "
                f"scoring (once; kept in {folder})\n"
            )
        calibration = self._tokens(
            self.prompt_text([{"role": "user", "content": torch_scorer.CALIBRATION}])
        )
        decoder = torch_scorer.load_model(self.path, cache, calibration)
        # 1024 tokens: a batch of 16 records of about 30-60 tokens each stays one pass
        return torch_scorer.TorchScorer(
            decoder, self.llm.n_ctx(), self.batch_records, self.batch_tokens or 1024
        )

    def _make_batcher(self) -> Any:
        """The torch scorer where it can run (``scorer`` auto or torch), else llama.cpp's;
        ``auto`` says on stderr why it falls back, except for what the machine lacks."""
        if self.scorer != "llamacpp":
            reason = self._torch_unsupported()
            if reason is None:
                try:
                    return self._torch_batcher()
                except ProviderError as exc:
                    reason = str(exc)
                except (ImportError, OSError, ValueError, RuntimeError) as exc:
                    reason = f"{type(exc).__name__}: {exc}"
                if self.scorer == "auto":
                    sys.stderr.write(f"tuneloop: batched scoring uses llama.cpp ({reason})\n")
            if self.scorer == "torch":
                raise ProviderError(f"the torch scorer cannot run {self.path.name}: {reason}")
        return _BatchScorer(self.llm, self.batch_records, self.batch_tokens or 2048)

    def choose(
        self, messages: Sequence[Message], choices: Sequence[str], params: GenParams
    ) -> Completion | None:
        return None  # score_choices always answers: no need to constrain decoding

    def close(self) -> None:
        """Free the batch scorer, then the model."""
        if self._batcher is not None:
            self._batcher.free()
            self._batcher = None
        close = getattr(self.llm, "close", None)
        if callable(close):
            close()

    def __del__(self) -> None:  # the batch context must go before the model it reads
        batcher = getattr(self, "_batcher", None)
        if batcher is not None:
            batcher.free()
