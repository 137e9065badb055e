"""A character-level RNN language model on a corpus the package generates from a toy grammar.

Why in the distribution: a recurrent model's training (gradients through time, a recurrent
matrix whose scale decides stability, a softmax over characters) is a different optimization
problem from every feed-forward family, and the corpus needs no download or licence: it is
generated, deterministically, from a small probabilistic grammar of English-like sentences
("the quick fox that sleeps chases a red bird near the river.") with relative clauses, so there
is structure at several ranges for the model to learn.
"""

from __future__ import annotations

import random

import torch
import torch.nn.functional as F
from torch import Tensor

from l2l.layout import ParamLayout
from l2l.tasks.base import Instances, TaskFamily, check_sample
from l2l.tasks.mnist_common import MAX_COUNTER, check_init_std, hash_indices, positive_int
from l2l.tasks.seeding import instance_generator, stream_key
from l2l.tasks.synthetic_common import make_ids

_DET = ("the", "a", "every", "some", "no")
_ADJ = ("small", "red", "quick", "lazy", "old", "bright", "quiet")
_NOUN = ("cat", "dog", "bird", "fox", "child", "robot", "tree", "river", "teacher")
_VERB_T = ("sees", "likes", "chases", "finds", "follows", "hears")
_VERB_I = ("sleeps", "runs", "sings", "waits", "falls")
_PREP = ("near", "under", "behind", "with")

#: the corpus's fixed seed (it is part of the task, like MNIST's files) and its split fractions
CORPUS_SEED = 0
SPLIT_FRACTIONS = {"train": (0.0, 0.8), "valid": (0.8, 0.9), "test": (0.9, 1.0)}


def _noun_phrase(rng: random.Random, depth: int) -> str:
    words = [rng.choice(_DET)]
    if rng.random() < 0.4:
        words.append(rng.choice(_ADJ))
    words.append(rng.choice(_NOUN))
    if depth < 2 and rng.random() < 0.15:
        words += ["that", _verb_phrase(rng, depth + 1)]
    return " ".join(words)


def _verb_phrase(rng: random.Random, depth: int) -> str:
    if rng.random() < 0.6:
        return f"{rng.choice(_VERB_T)} {_noun_phrase(rng, depth)}"
    return rng.choice(_VERB_I)


def grammar_corpus(num_chars: int, seed: int = CORPUS_SEED) -> str:
    """At least ``num_chars`` characters of sentences from the toy grammar, cut to
    ``num_chars``: the same text for the same arguments on every platform (``random.Random``)."""
    rng = random.Random(seed)
    parts: list[str] = []
    total = 0
    while total < num_chars:
        sentence = f"{_noun_phrase(rng, 0)} {_verb_phrase(rng, 0)}"
        if rng.random() < 0.3:
            sentence += f" {rng.choice(_PREP)} {_noun_phrase(rng, 1)}"
        parts.append(sentence + ". ")
        total += len(parts[-1])
    return "".join(parts)[:num_chars]


class CharRNNInstances(Instances):
    """``B`` RNNs reading one split's token ids ``tokens (L,)``; ``ids`` and ``key`` fix each
    instance's windows at every step."""

    def __init__(self, family: CharRNNFamily, tokens: Tensor, ids: Tensor, key: int,
                 init_params: Tensor) -> None:
        self.family = family
        self.tokens = tokens
        self.ids = ids
        self.key = key
        self.init_params = init_params

    def repeat(self, times: int) -> CharRNNInstances:
        return CharRNNInstances(self.family, self.tokens, self.ids.repeat(times), self.key,
                                self.init_params.repeat(times, 1))

    def window_starts(self, step: int) -> Tensor:
        """Start positions ``(B, batch_size)`` in the split of step ``step``'s windows."""
        step = int(step)
        if not 0 <= step < MAX_COUNTER:
            raise ValueError(f"step must lie in [0, 2**32), got {step}")
        starts = self.tokens.shape[0] - self.family.seq_len
        return hash_indices(self.key, self.ids, step, self.family.batch_size, starts)

    def windows(self, starts: Tensor) -> Tensor:
        """Token windows ``starts.shape + (seq_len + 1,)`` (inputs and next-character targets)."""
        offsets = torch.arange(self.family.seq_len + 1, device=starts.device)
        return self.tokens[starts.unsqueeze(-1) + offsets]

    def loss(self, params: Tensor, step: int) -> Tensor:
        return self.family.sequence_loss(params, self.windows(self.window_starts(step)))

    @torch.no_grad()
    def evaluate(self, params: Tensor) -> dict[str, Tensor]:
        """``"loss"`` (nats per character) and next-character ``"accuracy"`` ``(B,)`` on
        ``eval_windows`` evenly spaced windows of the split (the same for every instance)."""
        params = params.detach()
        count = self.family.eval_windows
        last = self.tokens.shape[0] - self.family.seq_len - 1
        starts = torch.linspace(0, last, count, device=self.tokens.device).long()
        win = self.windows(starts).expand(params.shape[0], count, -1)
        logits = self.family.logits(params, win[..., :-1])
        target = win[..., 1:]
        ce = F.cross_entropy(logits.flatten(0, 2), target.flatten(), reduction="none")
        acc = (logits.argmax(-1) == target).to(params.dtype)
        return {"loss": ce.view(target.shape).flatten(1).mean(1),
                "accuracy": acc.flatten(1).mean(1)}


class CharRNNFamily(TaskFamily):
    """Elman RNNs ``h_t = tanh(E[c_t] + h_{t-1} W + b)``, ``logits_t = h_t V + c`` with ``hidden``
    units over the corpus's characters (``vocab_size``: 27 for the default corpus), trained on
    the mean next-character cross-entropy of ``batch_size`` windows of ``seq_len`` characters.

    The corpus (``grammar_corpus(corpus_chars)``) is split 80/10/10 % into ``"train"``,
    ``"valid"`` and ``"test"`` text, like MNIST's splits; every instance of a split reads the
    same text, and the window starts of instance ``i`` at step ``t`` are the counter-based hash
    of ``(key(seed, split), i, t, j)`` (``l2l.tasks.mnist_common.hash_indices``). Each window
    starts from ``h_0 = 0``. Instance ``i`` draws its start ``randn(n)`` in float64 from its own
    generator, scaled per parameter by ``init_scale``. The defaults (32 units, 8 windows of 16
    characters, 2,811 parameters) cost a few ms per step for 10 instances. Tensors in flat
    order (``param_shapes``): ``E (vocab, hidden)``, ``W (hidden, hidden)``, ``b (hidden,)``,
    ``V (hidden, vocab)``, ``c (vocab,)``.
    """

    name = "char_rnn"
    _namespace = "char_rnn"

    def __init__(self, hidden: int = 32, seq_len: int = 16, batch_size: int = 8,
                 corpus_chars: int = 50_000, eval_windows: int = 256,
                 init_gain: float = 1.0) -> None:
        self.hidden = positive_int("hidden", hidden)
        self.seq_len = positive_int("seq_len", seq_len)
        self.batch_size = positive_int("batch_size", batch_size)
        self.corpus_chars = positive_int("corpus_chars", corpus_chars)
        self.eval_windows = positive_int("eval_windows", eval_windows)
        self.init_gain = check_init_std(init_gain)
        text = grammar_corpus(self.corpus_chars)
        self.vocab = "".join(sorted(set(text)))
        self.vocab_size = len(self.vocab)
        lookup = {ch: k for k, ch in enumerate(self.vocab)}
        self._corpus = torch.tensor([lookup[ch] for ch in text], dtype=torch.int64)
        for split, (lo, hi) in SPLIT_FRACTIONS.items():
            length = round(hi * len(text)) - round(lo * len(text))
            if length < self.seq_len + 2:
                raise ValueError(f"corpus_chars={corpus_chars} leaves the {split} split "
                                 f"{length} characters, fewer than seq_len + 2 = "
                                 f"{self.seq_len + 2}: raise corpus_chars or lower seq_len")
        H, V = self.hidden, self.vocab_size
        self._shapes = [("E", (V, H)), ("W", (H, H)), ("b", (H,)), ("V", (H, V)), ("c", (V,))]
        self._num_params = sum(_numel(s) for _, s in self._shapes)

    def __repr__(self) -> str:
        return (f"CharRNNFamily(hidden={self.hidden}, seq_len={self.seq_len}, "
                f"batch_size={self.batch_size}, corpus_chars={self.corpus_chars}, "
                f"eval_windows={self.eval_windows}, init_gain={self.init_gain})")

    @property
    def num_params(self) -> int:
        return self._num_params

    @property
    def layout(self) -> ParamLayout:
        return ParamLayout(tuple(n for n, _ in self._shapes), tuple(s for _, s in self._shapes))

    def split_tokens(self, split: str) -> Tensor:
        """The token ids ``(L,)`` of ``split``'s text."""
        lo, hi = SPLIT_FRACTIONS[split]
        n = self._corpus.shape[0]
        return self._corpus[round(lo * n) : round(hi * n)]

    def init_scale(self) -> Tensor:
        """Per-parameter init std ``(n,)``: ``E``, ``W`` and ``V`` ``init_gain / sqrt(hidden)``
        (a one-hot input's embedding and the recurrence then keep ``h`` of order 1), biases 0."""
        H = self.hidden
        parts = []
        for name, shape in self._shapes:
            std = 0.0 if name in ("b", "c") else self.init_gain / H**0.5
            parts.append(torch.full((_numel(shape),), std, dtype=torch.float64))
        return torch.cat(parts)

    def unflatten(self, params: Tensor) -> list[Tensor]:
        """Views ``[E (B, V, H), W (B, H, H), b (B, H), V (B, H, V), c (B, V)]`` of ``params``."""
        if params.dim() != 2 or params.shape[1] != self._num_params:
            raise ValueError(f"params must have shape (B, {self._num_params}), got "
                             f"{tuple(params.shape)}")
        B, off, out = params.shape[0], 0, []
        for _, shape in self._shapes:
            out.append(params[:, off : off + _numel(shape)].reshape(B, *shape))
            off += _numel(shape)
        return out

    def logits(self, params: Tensor, inputs: Tensor) -> Tensor:
        """Next-character logits ``(B, m, T, V)`` of every instance on its windows
        ``inputs (B, m, T)`` of token ids."""
        E, W, b, Vo, c = self.unflatten(params)
        B, m, T = inputs.shape
        x = torch.bmm(F.one_hot(inputs, self.vocab_size).to(params.dtype).view(B, m * T, -1), E)
        x = (x + b.unsqueeze(1)).view(B, m, T, self.hidden)
        h = x.new_zeros(B, m, self.hidden)
        states = []
        for t in range(T):
            h = torch.tanh(x[:, :, t] + torch.bmm(h, W))
            states.append(h)
        hs = torch.stack(states, dim=2).view(B, m * T, self.hidden)
        return torch.baddbmm(c.unsqueeze(1), hs, Vo).view(B, m, T, self.vocab_size)

    def sequence_loss(self, params: Tensor, windows: Tensor) -> Tensor:
        """Mean next-character cross-entropy ``(B,)`` of windows ``(B, m, T + 1)``."""
        logits = self.logits(params, windows[..., :-1])
        target = windows[..., 1:]
        ce = F.cross_entropy(logits.flatten(0, 2), target.flatten(), reduction="none")
        return ce.view(target.shape).flatten(1).mean(dim=1)

    def sample(self, batch_size: int, seed: int, split: str = "train", *, offset: int = 0,
               device: torch.device | str | None = None,
               dtype: torch.dtype = torch.float32) -> CharRNNInstances:
        check_sample(batch_size, seed, split, offset, dtype)
        dev = torch.device("cpu") if device is None else torch.device(device)
        ids = make_ids(offset, batch_size, dev)
        rows = [torch.randn(self._num_params, dtype=torch.float64,
                            generator=instance_generator(self._namespace, seed, split, i))
                for i in range(offset, offset + batch_size)]
        init = (torch.stack(rows) * self.init_scale()).to(device=dev, dtype=dtype)
        key = stream_key(self._namespace, seed, split, "minibatch")
        return CharRNNInstances(self, self.split_tokens(split).to(dev), ids, key, init)


def _numel(shape: tuple[int, ...]) -> int:
    out = 1
    for s in shape:
        out *= s
    return out
