"""Local Hugging Face models through transformers: how fine-tuned students are run.

Label scoring is one batched forward pass over (prompt + choice + end of turn) for all
choices; the log-probabilities of the choice tokens are summed. Generation uses ``generate``.
The model reads exactly the prompt that ``tokenizer.apply_chat_template`` makes, the same
function training uses; a model without a chat template (a base model) reads the messages'
contents joined by blank lines. A choice is tokenized together with its prompt, as training
tokenizes an example (a SentencePiece tokenizer such as Open LLaMA's spells "pos" differently
alone and after a newline), so it is scored in the very tokens the model learnt.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tuneloop.llm.types import ChoiceScores, Completion, GenParams, Message


class TransformersProvider:
    kind = "transformers"

    def __init__(
        self,
        model: str,
        source: str | Path | Any,
        tokenizer: Any = None,
        *,
        dtype: str = "auto",
    ) -> None:
        """``source`` is a local model folder (or a hub id, for users with hub access), or an
        already loaded model object, in which case ``tokenizer`` must be given too."""
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.model = model
        self.lm: Any
        self.tokenizer: Any
        if isinstance(source, str | Path):
            self.tokenizer = tokenizer or AutoTokenizer.from_pretrained(str(source))
            torch_dtype = getattr(torch, dtype) if dtype != "auto" else "auto"
            self.lm = AutoModelForCausalLM.from_pretrained(str(source), dtype=torch_dtype)
        else:
            if tokenizer is None:
                raise ValueError("a loaded model needs its tokenizer")
            self.lm, self.tokenizer = source, tokenizer
        self.lm.eval()
        self._end_of_turn = self._find_end_of_turn()

    def _find_end_of_turn(self) -> list[int]:
        if getattr(self.tokenizer, "chat_template", None):
            text = self.tokenizer.apply_chat_template(
                [{"role": "user", "content": "x"}, {"role": "assistant", "content": "§"}],
                tokenize=False,
            )
            after = str(text).split("§", 1)[1].strip("\n") if "§" in str(text) else ""
            ids = self.tokenizer(after, add_special_tokens=False)["input_ids"]
            if ids:
                return [int(ids[0])]
        eos = self.tokenizer.eos_token_id
        return [int(eos)] if eos is not None else []

    def prompt_ids(self, messages: Sequence[Message]) -> list[int]:
        """The token ids the model reads for these messages."""
        if getattr(self.tokenizer, "chat_template", None):
            ids = self.tokenizer.apply_chat_template(
                list(messages), add_generation_prompt=True, tokenize=True, return_dict=False
            )
            return [int(i) for i in ids]
        return [int(i) for i in self.tokenizer(_plain_text(messages))["input_ids"]]

    def answer_ids(self, messages: Sequence[Message], choice: str) -> tuple[list[int], int]:
        """(the ids of the prompt followed by ``choice`` as the assistant's whole answer, up to
        and including its end of turn; where the answer starts). Tokenized in one piece, as the
        trainer tokenizes an example: the answer starts where these ids leave the prompt's."""
        if getattr(self.tokenizer, "chat_template", None):
            turns = [*messages, {"role": "assistant", "content": choice}]
            ids = self.tokenizer.apply_chat_template(turns, tokenize=True, return_dict=False)
        else:  # the trainer appends the end-of-sequence token to a plain completion
            eos = self.tokenizer.eos_token or ""
            ids = self.tokenizer(_plain_text(messages) + choice + eos)["input_ids"]
        full = [int(i) for i in ids]
        prompt = self.prompt_ids(messages)
        start = 0
        while start < min(len(prompt), len(full)) and prompt[start] == full[start]:
            start += 1
        start = max(start, 1)  # the first token has nothing before it to be predicted from
        end = len(full)
        if self._end_of_turn:  # stop after the answer's end of turn (what follows is format)
            marker = self._end_of_turn[0]
            end = next((i + 1 for i in range(start, len(full)) if full[i] == marker), end)
        return full[:end], start

    def chat(self, messages: Sequence[Message], params: GenParams) -> Completion:
        import torch

        ids = self.prompt_ids(messages)
        inputs = torch.tensor([ids])
        sample = params.temperature > 0
        if params.seed is not None:
            torch.manual_seed(params.seed)
        with torch.no_grad():
            out = self.lm.generate(
                inputs,
                attention_mask=torch.ones_like(inputs),
                max_new_tokens=params.max_tokens,
                do_sample=sample,
                temperature=params.temperature if sample else None,
                top_p=params.top_p if sample else None,
                pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
            )
        new = out[0, len(ids) :].tolist()
        text = self.tokenizer.decode(new, skip_special_tokens=True)
        for stop in params.stop:
            text = text.split(stop, 1)[0]
        return Completion(text.strip(), len(ids), len(new), "stop")

    def score_choices(
        self, messages: Sequence[Message], choices: Sequence[str]
    ) -> ChoiceScores | None:
        import torch

        prompt = self.prompt_ids(messages)
        answers = [self.answer_ids(messages, c) for c in choices]
        width = max(len(ids) for ids, _ in answers)
        pad = self.tokenizer.pad_token_id or 0
        rows = [ids + [pad] * (width - len(ids)) for ids, _ in answers]
        mask = [[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in answers]
        with torch.no_grad():
            logits = self.lm(
                input_ids=torch.tensor(rows), attention_mask=torch.tensor(mask)
            ).logits.float()
        logprobs = torch.log_softmax(logits, dim=-1)
        scores: dict[str, float] = {}
        for row, (choice, (ids, start)) in enumerate(zip(choices, answers, strict=True)):
            # the logits at position p predict token p + 1
            scores[choice] = float(
                sum(logprobs[row, p - 1, ids[p]] for p in range(start, len(ids)))
            )
        return ChoiceScores(scores, len(prompt), {"prompt_tokens": len(prompt)})

    def choose(
        self, messages: Sequence[Message], choices: Sequence[str], params: GenParams
    ) -> Completion | None:
        return None  # score_choices always answers


def _plain_text(messages: Sequence[Message]) -> str:
    """The prompt of a model without a chat template (as training builds it)."""
    return "\n\n".join(m["content"] for m in messages) + "\n"
