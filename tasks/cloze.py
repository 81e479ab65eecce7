"""Paraphrase detection as a cloze: GPT-2 reads the prompt and its next token answers "yes" or "no".

    prompt = 'Question 1: "{s1}"\\nQuestion 2: "{s2}"\\nAre these questions asking the same thing?\\n'
    h      = GPT2(prompt)[t_last]                         (C,)  hidden state at the last real token (after ln_f)
    z_c    = h . W_te[c]            for c in (no, yes)    the LM head's logits of the two answer tokens only
    label  = argmax(z_no, z_yes)                          0 = not a paraphrase, 1 = paraphrase

The loss is the cross-entropy of softmax(z_no, z_yes): the next-token distribution renormalised over the two
answers, losses.restricted_cross_entropy. The task's loss function (classify.classification_loss) takes the
plain cross-entropy of these (B, 2) logits, which is that restricted cross-entropy; R-Drop and SimCSE apply as to
any classifier (SimCSE's embedding: the hidden state at the last real token).

Economy: GPT-2's LM head is logits = h W_te^T over all 50257 tokens at every position, (B, T, 50257) floats,
though only two numbers of one position are used. We run the body with logits_to_keep=0 (no LM head), gather the
hidden state at each row's last real token, (B, C), and multiply by the two answer rows of W_te, (2, C): the
same numbers (tests/test_paraphrase.py checks it against the full logits), for B*C*2 instead of B*T*C*V work.
Because W_te is the live embedding matrix, full fine-tuning trains the answer rows as the LM head would.

The answer ids come from the tokenizer (GPT-2: "no" = 3919, "yes" = 8505), never hard-coded.

--head vocab (what --protocol course sets) is the course's objective instead (paraphrase_detection.py):

    z      = h W_te^T                                     (V,)  the LM head's logits over the whole vocabulary
    loss   = CE(softmax(z), y_tok)                        y_tok = the answer's token id ("yes" 8505, "no" 3919)
    pred   = argmax_v z_v                                 a token id: possibly neither answer

So the labels are token ids (encode_pairs(..., label_ids=...)), the prediction files hold token ids, and a pair
whose most likely next token is, say, " recycling" counts as wrong. The default two-way objective cannot answer
anything but yes or no, and its loss starts near log 2 instead of near log V (GPT2VocabCloze below).

--protocol course asks with the course's prompts exactly (course_prompt): on the test split another question,

    'Is "{s1}" a paraphrase of "{s2}"? Answer "yes" or "no": '

and on train and dev minigpt's prompt without the quote that should close question 2 ('Question 2: "{s2}\\n').
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from tasks.classify import Encoded, encode_examples
from tasks.data import ParaphraseExample, paraphrase_prompt
from tasks.heads import ClassifierOutput, pool_last

ANSWERS = ("no", "yes")  # index = label: 0 = not a paraphrase, 1 = paraphrase


def answer_token_ids(tokenizer) -> list[int]:
    """[id of "no", id of "yes"]; a clear error when the tokenizer splits either into several tokens."""
    try:
        return [tokenizer.token_id(answer) for answer in ANSWERS]
    except ValueError as e:
        raise ValueError(f"the cloze paraphrase task needs 'yes' and 'no' to be single tokens: {e}") from None


def cloze_logits(hidden: torch.Tensor, attention_mask: torch.Tensor, wte_weight: torch.Tensor,
                 answer_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T, C) hidden states -> ((B, K) answer logits, (B, C) hidden state at the last real token)."""
    h_last = pool_last(hidden, attention_mask)  # (B, C)
    return F.linear(h_last, wte_weight[answer_ids]), h_last  # (B, C) @ (K, C)^T -> (B, K)


class GPT2Cloze(nn.Module):
    """forward(input_ids, attention_mask) -> ClassifierOutput(logits (B, 2) over [no, yes], pooled (B, C)).

    No parameters of its own: the answer logits come from the body's tied LM head (W_te).
    """

    def __init__(self, body: nn.Module, answer_ids: list[int]):
        super().__init__()
        self.body = body
        self.register_buffer("answer_ids", torch.tensor(answer_ids, dtype=torch.long), persistent=False)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> ClassifierOutput:
        hidden = self.body(input_ids, attention_mask=attention_mask, logits_to_keep=0).hidden_states  # (B, T, C)
        logits, h_last = cloze_logits(hidden, attention_mask, self.body.wte.weight, self.answer_ids)
        return ClassifierOutput(logits, h_last)


class GPT2VocabCloze(nn.Module):
    """forward(input_ids, attention_mask) -> ClassifierOutput(logits (B, V) over the whole vocabulary, pooled (B, C)):
    the course's head, the next-token logits at the last real token (its labels and predictions are token ids)."""

    def __init__(self, body: nn.Module):
        super().__init__()
        self.body = body

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> ClassifierOutput:
        hidden = self.body(input_ids, attention_mask=attention_mask, logits_to_keep=0).hidden_states  # (B, T, C)
        h_last = pool_last(hidden, attention_mask)  # (B, C)
        return ClassifierOutput(F.linear(h_last, self.body.wte.weight), h_last)  # (B, C) @ (V, C)^T -> (B, V)


def course_prompt(s1: str, s2: str, split: str) -> str:
    """The course's prompt of a pair (datasets.py): its test question, or its train/dev prompt with the closing
    quote of question 2 missing."""
    if split == "test":
        return f'Is "{s1}" a paraphrase of "{s2}"? Answer "yes" or "no": '
    return f'Question 1: "{s1}"\nQuestion 2: "{s2}\nAre these questions asking the same thing?\n'


def encode_pairs(tokenizer, examples: list[ParaphraseExample], max_length: int, name: str,
                 prompt: Callable[[str, str], str] = paraphrase_prompt,
                 label_ids: list[int] | None = None) -> list[Encoded]:
    """Each pair as its cloze `prompt`, tokenized. A prompt longer than max_length loses its START (truncation
    'left'): the question "Are these questions asking the same thing?" and the answer position must stay.
    label_ids (--head vocab): label k is stored as the token id label_ids[k] (answer_token_ids); test rows keep -1."""
    prompts = [prompt(e.sentence1, e.sentence2) for e in examples]
    labels = [e.label if label_ids is None or e.label is None else label_ids[e.label] for e in examples]
    return encode_examples(tokenizer, prompts, labels, max_length, "left", name)
