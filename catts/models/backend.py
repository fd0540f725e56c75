"""The one protocol every model backend implements, shaped by what probe, CA-TTS and CDRL need.

- ``generate``: N continuations per prompt in one call, each with its text, token ids, the chosen
  tokens' log-probabilities and the top-k log-probabilities of the *raw* next-token distribution
  (before temperature / top-k / top-p; every trace says so in ``logprob_source``).
- ``score``: teacher-forced log-probabilities of given continuations (expert likelihood voting,
  CDRL's confidence of one completion under a noisy image).
- ``score_candidates``: the same for many continuations of one prompt, the prompt encoded and run
  once (expert likelihood voting over the distinct candidate answers).
- ``next_token_logprobs``: the full next-token distribution after a given prefix, for several
  contexts at once.
- ``contrastive_generate``: greedy contrastive decoding between two images of one prompt (the visual
  self-check, spec section 6), ``capabilities.contrastive`` says how exactly.

Contrastive decoding. With i the original image and i' its noised copy, step t scores every token v

    score_t(v) = (1 + a) log p(v | y<t, i, q) - a log p(v | y<t, i', q)
                 if p(v | y<t, i, q) >= b max_u p(u | y<t, i, q), else -inf  (plausibility cut)

and takes y_t = argmax_v score_t(v) (a = 0.5, b = 0.1). ``"exact"``: a backend with full per-step
distributions of both contexts (transformers). ``"approx"``: a backend that only sees the top k
(= 20) log-probabilities of each context per step (OpenAI-compatible servers) combines the two lists
over their union (``catts.models.contrastive.approx_contrastive_step``): the cut's maximum is the
original list's top-1 (exact); a token missing from the noised list gets the noised list's k-th
log-probability, an upper bound of its true one, so its score is a lower bound; a token missing
from the original list is dropped (its p is unknown, and below the cut whenever the original k-th
is). Traces record which in ``meta["contrastive"]``.

Token ids belong to one vocabulary: a backend with ids names its vocabulary by a short fingerprint
(``vocab_fingerprint``, in every trace's ``meta["vocab"]``), and ``score`` refuses a trace of another.

Sampling is seeded per (seed, prompt key, sample index), never by position in a batch, so the
same seed gives the same traces whatever the batch size. ``SamplingParams.first_index`` offsets the
sample index, so samples can be drawn in waves: a wave of 8 from index 8 continues a wave of 8 from
index 0, and the first 16 samples are the same however they were split into waves (nested N curves).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence, runtime_checkable

import numpy as np
from PIL import Image

from catts.data.image import fit_image  # noqa: F401 -- the one image normalisation, importable from here

TOP_LOGPROBS = 20  # the cap of OpenAI-compatible servers' top_logprobs


@dataclass
class Prompt:
    """One request: images, the user text (the backend applies the chat template) and a stable key.

    Multi-turn: ``system`` is a system message before the first turn; ``turns`` are the (role, text)
    turns after the first user turn (which holds the images and ``text``), alternating assistant and
    user and ending with a user turn, e.g. the critic loop: the model's answer, then the critique with
    "answer again".
    """

    images: list[Image.Image]
    text: str
    key: str = ""  # e.g. the sample id; seeds sampling so results do not depend on batching
    system: str | None = None
    turns: Sequence[tuple[str, str]] = ()

    def messages(self) -> list[dict]:
        """The conversation in the chat-template form transformers and OpenAI-compatible servers take."""
        roles = [role for role, _ in self.turns]
        if roles and (roles != ["assistant", "user"] * (len(roles) // 2) or len(roles) % 2):
            raise ValueError(f"prompt {self.key!r}: turns after the first must alternate assistant, user and end "
                             f"with user, got {roles}")
        msgs = [{"role": "system", "content": [{"type": "text", "text": self.system}]}] if self.system else []
        msgs.append({"role": "user", "content": [{"type": "image"} for _ in self.images]
                     + [{"type": "text", "text": self.text}]})
        msgs += [{"role": role, "content": [{"type": "text", "text": text}]} for role, text in self.turns]
        return msgs


@dataclass(frozen=True)
class SamplingParams:
    n: int = 1
    temperature: float = 0.0  # 0 = greedy
    top_k: int = 0            # 0 = off
    top_p: float = 1.0
    max_new_tokens: int = 256
    seed: int = 0
    top_logprobs: int = TOP_LOGPROBS
    first_index: int = 0      # sample indices first_index .. first_index + n - 1: waves draw new samples
    stop: tuple[str, ...] = ()  # end a trace at the token that completes any of these strings (kept in the trace)

    def __post_init__(self) -> None:
        if self.n < 1 or self.max_new_tokens < 1:
            raise ValueError("n and max_new_tokens must be >= 1")
        if self.first_index < 0:
            raise ValueError("first_index must be >= 0")
        if isinstance(self.stop, str) or not all(isinstance(x, str) and x for x in self.stop):
            raise ValueError("stop must be a tuple of non-empty strings")
        if self.temperature < 0 or not 0 < self.top_p <= 1 or self.top_k < 0:
            raise ValueError(f"invalid sampling parameters: {self}")
        if not 1 <= self.top_logprobs <= 100:
            raise ValueError("top_logprobs must be in 1..100")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


class TopPieces(Sequence):
    """``[T][k]`` text pieces of the top-k tokens, decoded from their ids only when a step is read.

    A backend with token ids hands this to a Trace instead of a list of lists: most steps of most
    traces are never read as text (only the answer's step is), and decoding all of them costs more
    than generating. Compares equal to the list of lists it stands for.
    """

    def __init__(self, top_ids: np.ndarray, piece: Callable[[int], str]):
        self.top_ids, self.piece = top_ids, piece

    def __len__(self) -> int:
        return len(self.top_ids)

    def __getitem__(self, t):
        if isinstance(t, slice):
            return [self[i] for i in range(*t.indices(len(self)))]
        return [self.piece(int(i)) for i in self.top_ids[t]]

    def __eq__(self, other) -> bool:
        return isinstance(other, Sequence) and len(other) == len(self) and all(
            list(a) == list(b) for a, b in zip(self, other))

    __hash__ = None  # type: ignore[assignment]


@dataclass
class Trace:
    """One generated (or scored) continuation."""

    text: str
    token_ids: list[int]
    logprobs: np.ndarray                 # [T] log p of each chosen token under the raw distribution
    top_logprobs: np.ndarray             # [T, k] the k largest raw log-probabilities, descending
    top_ids: np.ndarray                  # [T, k] their token ids
    finish_reason: str = "stop"          # "stop" (end token) or "length"
    tokens: list[str] = field(default_factory=list)            # [T] text piece of each chosen token
    top_tokens: Sequence[list[str]] = field(default_factory=list)  # [T][k] text of each top-k token
    logprob_source: str = "raw"          # which distribution the log-probabilities come from
    meta: dict = field(default_factory=dict)

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)


@dataclass(frozen=True)
class ContrastiveParams:
    """Greedy contrastive decoding (see the module docstring): ``alpha`` = a, ``beta`` = b."""

    alpha: float = 0.5
    beta: float = 0.1
    max_new_tokens: int = 256
    stop: tuple[str, ...] = ()  # as SamplingParams.stop
    top_logprobs: int = TOP_LOGPROBS

    def __post_init__(self) -> None:
        if self.alpha < 0 or not 0 <= self.beta <= 1:
            raise ValueError(f"contrastive decoding needs alpha >= 0 and 0 <= beta <= 1, got {self}")
        if self.max_new_tokens < 1 or not 1 <= self.top_logprobs <= 100:
            raise ValueError("max_new_tokens must be >= 1 and top_logprobs in 1..100")
        if isinstance(self.stop, str) or not all(isinstance(x, str) and x for x in self.stop):
            raise ValueError("stop must be a tuple of non-empty strings")


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do, and how exactly, so a job can say so in its records.

    ``contrastive``: "exact" (full distributions of both contexts), "approx" (top-k lists only) or
    "none". ``full_distribution``: ``next_token_logprobs`` returns every token's log-probability.
    ``prefix_cache``: ``score_candidates`` runs each prompt once (else once per candidate).
    ``teacher_forcing``: ``score`` works (an OpenAI-compatible chat server cannot score given text).
    """

    contrastive: str = "none"
    full_distribution: bool = False
    prefix_cache: bool = False
    teacher_forcing: bool = False   # ``score`` / ``score_candidates`` of given text (the likelihood voter)

    def __post_init__(self) -> None:
        if self.contrastive not in ("exact", "approx", "none"):
            raise ValueError(f"contrastive must be exact, approx or none, got {self.contrastive!r}")


@runtime_checkable
class Backend(Protocol):
    name: str
    capabilities: Capabilities

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[list[Trace]]:
        """``params.n`` traces for each prompt, in prompt order."""
        ...

    def score(self, prompts: Sequence[Prompt], continuations: Sequence[Sequence[int] | str | Trace],
              add_end: bool = True) -> list[Trace]:
        """Teacher-forced log-probabilities of each continuation after its prompt.

        A continuation is token ids (scored as they are), text (tokenised, with the model's end token
        appended when ``add_end``: the likelihood of a complete answer) or a Trace of the same vocabulary.
        """
        ...

    def score_candidates(self, prompts: Sequence[Prompt],
                         candidates: Sequence[Sequence[Sequence[int] | str | Trace]],
                         add_end: bool = True) -> list[list[Trace]]:
        """``score`` of every candidate of each prompt: ``[score([p] * n, cands) for p, cands in ...]``."""
        ...

    def next_token_logprobs(self, prompts: Sequence[Prompt], prefixes: Sequence[Sequence[int]]) -> np.ndarray:
        """[B, V] log-probabilities of the next token after each prompt + prefix."""
        ...

    def contrastive_generate(self, prompts: Sequence[Prompt], noised: Sequence[Prompt],
                             params: ContrastiveParams) -> list[Trace]:
        """One greedy contrastive trace per prompt against its ``noised`` twin (same text, noised image).

        Its ``logprobs`` / ``top_logprobs`` are the raw original-image distribution's, ``meta`` holds
        ``contrastive`` ("exact" or "approx") and ``contrastive_scores`` (score_t of each chosen token).
        """
        ...


def sample_seed(seed: int, key: str, index: int) -> int:
    """A 63-bit seed from (run seed, prompt key, sample index); stable across machines and runs."""
    digest = hashlib.sha256(f"{seed}|{key}|{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)
