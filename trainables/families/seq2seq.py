"""Recurrent encoder-decoder (seq2seq) for the arithmetic queries: ``12+34`` -> ``46``.

The encoder reads the query one character per step (``input: text``: a token embedding;
``input: image``: a small conv net shared across steps, on the 28x28 glyph of the character) into
an LSTM or GRU stack; its final state, mapped by a linear bridge when the decoder has another
number of layers, starts the decoder stack. Every decoder input carries the encoder's top-layer
final state (the context vector of Cho et al. 2014) beside the previous answer character. The
decoder emits one answer character per step:

* ``output: text``: a softmax over the 13 tokens (cross-entropy); the previous token is read back
  through an embedding.
* ``output: image``: a conv decoder draws the step's 28x28 glyph from the decoder state (Bernoulli
  likelihood on the pixels); the previous glyph is read back by a glyph conv net. Pixels alone
  teach arithmetic slowly: which digit to draw is a small part of a glyph's NLL next to the
  handwriting style no query predicts (0.09 readback accuracy after 25 epochs at fraction 0.5).
  ``answer_token_weight > 0`` adds an auxiliary cross-entropy of the answer's tokens, read from
  the same decoder state by a linear head, so that the state learns the answer as fast as a text
  decoder does and the conv decoder learns to draw it (0.83 after 15 epochs).

Likewise, ``input: image`` learns digits from the answers alone slowly and overfits the train
pool's digit images (0.72 sequence accuracy after 30 epochs, validation loss rising);
``query_token_weight > 0`` adds a cross-entropy of the query's tokens read from each glyph's code
by a linear head. Both auxiliary terms use text the dataset always carries, in training only
(evaluation reads images alone); they change what is learnt from what, so a study says when it
uses them. The reported ``recon_loss`` stays the answer's NLL alone; the terms are reported as
``answer_token_loss`` and ``query_token_loss``.

Training uses teacher forcing (the previous *true* character is read back); evaluation decodes
greedily (the previous *predicted* token, or the predicted glyph's Bernoulli mean). In eval mode
``forward`` computes both: the teacher-forced ``recon_loss`` (``val_recon_loss``) and the greedy
answers (``predictions``), scored by :meth:`Seq2Seq.validation_metrics` for text outputs and by
the dataset's readback classifier for image outputs.

Data contract (``datasets/arithmetic.py``): columns ``query`` ``(B, Lq)`` and ``answer`` ``(B, La)``
token ids of :data:`VOCAB_SIZE` tokens (float32 as the loop casts them), ``query_images``
``(B, Lq, 28, 28)`` and ``answer_images`` ``(B, La, 28, 28)`` glyphs as intensities 0-255 (stored
uint8, divided here by :data:`PIXEL_MAX`).

References:
    Sutskever, Vinyals, Le 2014, "Sequence to Sequence Learning with Neural Networks",
    arXiv:1409.3215 (the encoder-decoder, greedy decoding, reversed inputs: sec. 3.3); Cho et al.
    2014, "Learning Phrase Representations using RNN Encoder-Decoder", arXiv:1406.1078, eq. 5-6
    (the context vector fed to every decoder step; the GRU); Williams & Zipser 1989, Neural
    Computation 1(2) (teacher forcing); Pascanu, Mikolov, Bengio 2013, "On the difficulty of
    training recurrent neural networks", arXiv:1211.5063 (``max_grad_norm``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from trainables.losses import bernoulli_nll
from trainables.nets import ConvDecoder, ConvEncoder
from trainables.registry import register

__all__ = ["Seq2SeqConfig", "Seq2Seq", "Seq2SeqOutput", "jitter", "VOCAB_SIZE", "GLYPH_SHAPE", "PIXEL_MAX", "COLUMNS"]

VOCAB_SIZE = 13  # datasets/arithmetic.py's VOCAB "0123456789+- ": token id = glyph class
GLYPH_SHAPE = (1, 28, 28)  # one MNIST-sized glyph per character
PIXEL_MAX = 255.0  # image columns hold intensities 0-255
# Which column each side reads, by kind.
COLUMNS = {"input": {"text": "query", "image": "query_images"}, "output": {"text": "answer", "image": "answer_images"}}
TARGET_COLUMN = "answer"  # the true answer's token ids, present for either output kind
_CELLS = {"lstm": nn.LSTM, "gru": nn.GRU}


class _Stepping:
    """Mixin for a torch optimizer: clips the gradient norm before each step and decays the lr after it.

    Under fp16 loss scaling the loop's ``GradScaler.step`` unscales the gradients before calling
    ``step``, so the clipped norm is that of the true gradients. The decayed lr lives in the
    param groups, so it is saved and restored with the optimizer's state dict.

    Args:
        params: The parameters.
        lr: Initial learning rate.
        max_norm: Largest global L2 norm of the gradients, or None for no clipping.
        half_life: Optimizer steps over which the lr halves, or None for a constant lr.
    """

    def __init__(self, params, lr: float, max_norm: float | None, half_life: int | None):
        super().__init__(params, lr=lr)
        self.max_norm = max_norm
        self.decay = 0.5 ** (1.0 / half_life) if half_life is not None else 1.0

    def step(self, closure=None):
        if self.max_norm is not None:
            nn.utils.clip_grad_norm_([p for g in self.param_groups for p in g["params"] if p.grad is not None],
                                     self.max_norm)
        loss = super().step(closure)
        for group in self.param_groups:
            group["lr"] *= self.decay
        return loss


class _Adam(_Stepping, torch.optim.Adam):
    pass


class _AdamW(_Stepping, torch.optim.AdamW):
    pass


class _SGD(_Stepping, torch.optim.SGD):
    pass


_OPTIMIZERS = {"adam": _Adam, "adamw": _AdamW, "sgd": _SGD}


class Seq2SeqConfig(BaseModel):
    """Hyperparameters of :class:`Seq2Seq`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    cell: Literal["lstm", "gru"] = "lstm"  # the replaced research repo's cell; the configs use gru (faster to learn)
    input: Literal["text", "image"] = "text"  # the query's characters as tokens or as glyph images
    output: Literal["text", "image"] = "text"  # the answer's characters as tokens or as glyph images
    encoder_layers: int = Field(1, ge=1, le=4)
    # None: as many as encoder_layers (the final states pass over unchanged); otherwise a linear
    # bridge maps the encoder's final states of all layers to the decoder's initial ones.
    decoder_layers: int | None = Field(None, ge=1, le=4)
    hidden_dim: int = Field(128, gt=0, le=4096)  # recurrent state
    embedding_dim: int = Field(32, gt=0, le=1024)  # per-character input vector (token embedding or glyph code)
    # Channels of the glyph conv nets (kernel 4, stride 2): 28 = 7 * 2 ** 2 allows at most two layers.
    filters: tuple[Annotated[int, Field(gt=0, le=512)], ...] = Field((8, 16), min_length=1, max_length=2)
    glyph_hidden: int = Field(64, gt=0, le=4096)  # width of the glyph nets' linear layer
    # Training only: shift each query glyph by up to this many pixels in x and y (zero fill), so
    # that the glyph net learns digits rather than the train pool's particular images.
    glyph_jitter: int = Field(0, ge=0, le=6)
    # Read the query last character first (Sutskever et al. 2014, sec. 3.3): the operands' low
    # digits, where addition starts, are then the encoder's first steps.
    reverse_query: bool = False
    # Clip the gradients' global L2 norm to this before each optimizer step (Pascanu et al. 2013):
    # without it, Adam on these RNNs now and then jumps out of a good solution. None: no clipping.
    max_grad_norm: float | None = Field(None, gt=0.0, le=1e6)
    # Optimizer steps over which the learning rate halves (exponential decay from training.lr), so
    # that late epochs settle instead of oscillating. None: a constant learning rate.
    lr_half_life: int | None = Field(None, gt=0, le=100_000_000)
    # output: image only. Weight of an auxiliary cross-entropy of the answer's tokens, read from the
    # decoder state by a linear head, added to the pixel NLL in the loss. 0: pixels alone.
    answer_token_weight: float = Field(0.0, ge=0.0, le=1e4)
    # input: image only. Weight of an auxiliary cross-entropy of the query's tokens, read from each
    # glyph's code by a linear head. 0: the glyph net learns from the answers alone.
    query_token_weight: float = Field(0.0, ge=0.0, le=1e4)
    # input: image only. What the encoder reads of each query glyph: its code from the glyph net, or
    # "tokens": the glyph's token probabilities (softmax of the query token head on the code)
    # times the token embedding, a 13-way bottleneck that leaves no handwriting style to memorise
    # training queries by (with codes the model fitted the train queries' answers long before the
    # held-out ones: train loss 0.4, validation 1.4 nats at 0.6 accuracy).
    glyph_reading: Literal["code", "tokens"] = "code"

    @model_validator(mode="after")
    def _image_only_options(self) -> Seq2SeqConfig:
        for side, weight in (("answer", self.answer_token_weight), ("query", self.query_token_weight)):
            kind = self.output if side == "answer" else self.input
            if weight != 0.0 and kind != "image":
                raise ValueError(f"{side}_token_weight: applies to {'output' if side == 'answer' else 'input'} "
                                 f"'image' (text is read as tokens already), but got {weight} with {kind!r}")
        if self.input != "image" and (self.glyph_reading != "code" or self.glyph_jitter):
            raise ValueError(f"glyph_reading, glyph_jitter: apply to input 'image', but got input={self.input!r} with "
                             f"glyph_reading={self.glyph_reading!r}, glyph_jitter={self.glyph_jitter}")
        return self

    @property
    def num_decoder_layers(self) -> int:
        """``decoder_layers``, or ``encoder_layers`` when it is None (tied)."""
        return self.encoder_layers if self.decoder_layers is None else self.decoder_layers


@dataclass
class Seq2SeqOutput:
    """What :meth:`Seq2Seq.forward` returns.

    Attributes:
        loss: Scalar training objective: ``recon_loss`` plus the weighted auxiliary token losses.
        recon_loss: Scalar, mean over the batch of the answer's teacher-forced NLL, in nats per
            sample, summed over answer positions (and pixels for image outputs).
        logits: ``(B, La, VOCAB_SIZE)`` token logits or ``(B, La, 28, 28)`` pixel logits.
        predictions: Eval mode only (else empty): ``answer_true`` ``(B, La)`` token ids and, for
            text outputs, ``answer_pred`` ``(B, La)`` greedy token ids; for image outputs,
            ``answer_images_pred`` ``(B, La, 28, 28)`` greedy glyph means in [0, 1].
        extra: ``answer_token_loss`` / ``query_token_loss`` when their weights are > 0: the
            auxiliary cross-entropies of the tokens, nats per sample summed over positions, mean
            over the batch.
    """

    loss: torch.Tensor
    recon_loss: torch.Tensor
    logits: torch.Tensor
    predictions: dict[str, torch.Tensor] = field(default_factory=dict)
    extra: dict[str, torch.Tensor] = field(default_factory=dict)

    def terms(self) -> dict[str, torch.Tensor]:
        """The scalar loss terms by name: ``loss``, ``recon_loss`` and the ``extra`` ones."""
        return {"loss": self.loss, "recon_loss": self.recon_loss, **self.extra}


class _GlyphEncoder(nn.Module):
    """A conv net applied to every glyph of a sequence: ``(B, L, 28, 28)`` in [0, 1] -> ``(B, L, E)``."""

    def __init__(self, filters: Sequence[int], hidden_dim: int, out_dim: int):
        super().__init__()
        self.net = ConvEncoder(GLYPH_SHAPE, filters, hidden_dim, out_dim, "leaky_relu")

    def forward(self, glyphs: torch.Tensor) -> torch.Tensor:
        b, length = glyphs.shape[:2]
        return self.net(glyphs.reshape(b * length, *GLYPH_SHAPE)).view(b, length, -1)


class _TokenEncoder(nn.Embedding):
    """Token ids ``(B, L)`` (any dtype holding integers) -> embeddings ``(B, L, E)``."""

    def __init__(self, embedding_dim: int):
        super().__init__(VOCAB_SIZE, embedding_dim)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return super().forward(ids.long())


def jitter(glyphs: torch.Tensor, max_shift: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Each glyph shifted by its own random offset of up to ``max_shift`` pixels per axis, zero filled.

    Args:
        glyphs: ``(..., H, W)`` images.
        max_shift: Largest shift in pixels, >= 0.
        generator: Draws the offsets (torch's global generator when None).

    Returns:
        ``(..., H, W)``, the same dtype and device.
    """
    *lead, h, w = glyphs.shape
    flat = F.pad(glyphs.reshape(-1, h, w), (max_shift,) * 4)  # (N, H + 2s, W + 2s)
    n = flat.shape[0]
    offsets = torch.randint(0, 2 * max_shift + 1, (2, n), generator=generator).to(glyphs.device)  # (2, N)
    rows = (offsets[0, :, None] + torch.arange(h, device=glyphs.device))[:, :, None]  # (N, H, 1)
    cols = (offsets[1, :, None] + torch.arange(w, device=glyphs.device))[:, None, :]  # (N, 1, W)
    return flat[torch.arange(n, device=glyphs.device)[:, None, None], rows, cols].reshape(*lead, h, w)


class _TextOutput(nn.Module):
    """Tokens: a linear softmax head; the previous token read back through an embedding."""

    def __init__(self, config: Seq2SeqConfig):
        super().__init__()
        self.embed = _TokenEncoder(config.embedding_dim)
        self.head = nn.Linear(config.hidden_dim, VOCAB_SIZE)

    def read(self, previous: torch.Tensor) -> torch.Tensor:
        """Token ids ``(B, T)`` -> decoder inputs ``(B, T, E)``."""
        return self.embed(previous)

    def nll(self, outputs: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(per-sample NLL (B,) in nats summed over positions, logits (B, T, VOCAB_SIZE))`` of
        decoder outputs ``(B, T, H)`` and true token ids ``(B, T)``."""
        logits = self.head(outputs)
        return F.cross_entropy(logits.transpose(1, 2), target.long(), reduction="none").sum(dim=1), logits

    def greedy(self, outputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(token ids (B, 1) int64, their read-back (B, 1, E))`` of decoder outputs ``(B, 1, H)``."""
        ids = self.head(outputs).argmax(dim=2)
        return ids, self.read(ids)


class _GlyphOutput(nn.Module):
    """Glyphs drawn by a conv decoder from each step's state (Bernoulli logits per pixel); the
    previous glyph read back by a glyph conv net."""

    def __init__(self, config: Seq2SeqConfig):
        super().__init__()
        self.reader = _GlyphEncoder(config.filters, config.glyph_hidden, config.embedding_dim)
        self.draw = ConvDecoder(GLYPH_SHAPE, config.filters, config.glyph_hidden, config.hidden_dim, "leaky_relu")

    def read(self, previous: torch.Tensor) -> torch.Tensor:
        """Glyphs ``(B, T, 28, 28)`` in [0, 1] -> decoder inputs ``(B, T, E)``."""
        return self.reader(previous)

    def _logits(self, outputs: torch.Tensor) -> torch.Tensor:
        b, t = outputs.shape[:2]
        return self.draw(outputs.reshape(b * t, -1)).view(b, t, *GLYPH_SHAPE[1:])  # (B, T, 28, 28)

    def nll(self, outputs: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(per-sample Bernoulli NLL (B,) in nats summed over positions and pixels, pixel logits
        (B, T, 28, 28))`` of decoder outputs ``(B, T, H)`` and true glyphs ``(B, T, 28, 28)`` in [0, 1]."""
        logits = self._logits(outputs)
        return bernoulli_nll(logits, target), logits

    def greedy(self, outputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(glyph means (B, 1, 28, 28) in [0, 1], their read-back (B, 1, E))``."""
        means = torch.sigmoid(self._logits(outputs))
        return means, self.read(means)


def _token_nll(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of token ids ``(B, T)`` under logits ``(B, T, VOCAB_SIZE)``: nats per sample summed
    over positions, mean over the batch (a scalar)."""
    return F.cross_entropy(logits.transpose(1, 2), ids.long(), reduction="none").sum(dim=1).mean()


def _output(config: Seq2SeqConfig) -> nn.Module:
    return _TextOutput(config) if config.output == "text" else _GlyphOutput(config)


@register("seq2seq", Seq2SeqConfig, loss_terms=("recon_loss",))
class Seq2Seq(nn.Module):
    """Encoder RNN over the query, decoder RNN over the answer, teacher-forced and greedy.

    Args:
        config: The family's hyperparameters.
        input_shape: Per-row shape of the dataset's input column, ``(Lq,)`` token ids or
            ``(Lq, 28, 28)`` glyphs; sequence lengths are read from each batch, so this only
            checks that the data are sequences of characters.

    Raises:
        ValueError: If ``input_shape`` is neither ``(L,)`` nor ``(L, 28, 28)``.
    """

    def __init__(self, config: Seq2SeqConfig, input_shape: Sequence[int]):
        super().__init__()
        shape = tuple(input_shape)
        if len(shape) not in (1, 3) or shape[0] < 1 or (len(shape) == 3 and shape[1:] != GLYPH_SHAPE[1:]):
            raise ValueError(f"input_shape: expected (L,) token ids or (L, 28, 28) glyphs per row, but got {shape}")
        self.config = config
        hidden, embed = config.hidden_dim, config.embedding_dim
        cell = _CELLS[config.cell]
        # query characters -> (B, Lq, E)
        self.reader = _TokenEncoder(embed) if config.input == "text" else \
            _GlyphEncoder(config.filters, config.glyph_hidden, embed)
        self.encoder = cell(embed, hidden, num_layers=config.encoder_layers, batch_first=True)
        self.output = _output(config)  # decoder outputs -> answer characters, and their read-back
        # Auxiliary token heads (weights > 0 only): the answer's tokens from the decoder state,
        # the query's tokens from the glyph codes.
        self.answer_token_head = nn.Linear(hidden, VOCAB_SIZE) if config.answer_token_weight > 0 else None
        self.query_token_head = nn.Linear(embed, VOCAB_SIZE) \
            if config.query_token_weight > 0 or config.glyph_reading == "tokens" else None
        self.glyph_tokens = _TokenEncoder(embed) if config.glyph_reading == "tokens" else None
        self.start = nn.Parameter(torch.zeros(embed))  # the first decoder step's "previous character"
        self.decoder = cell(embed + hidden, hidden, num_layers=config.num_decoder_layers, batch_first=True)
        num_states = 2 if config.cell == "lstm" else 1  # (h, c) or h
        self.bridge = nn.ModuleList(
            [nn.Linear(config.encoder_layers * hidden, config.num_decoder_layers * hidden) for _ in range(num_states)]
        ) if config.encoder_layers != config.num_decoder_layers else None

    @classmethod
    def config_metrics(cls, config: Seq2SeqConfig) -> tuple[str, ...]:
        """Per-epoch metrics of text outputs: ``val_sequence_accuracy``, ``val_char_accuracy``.

        Image outputs are scored by the dataset's readback classifier (``val_readback_accuracy``);
        positive token weights add ``train_/val_answer_token_loss`` and ``train_/val_query_token_loss``.
        """
        names = ("val_sequence_accuracy", "val_char_accuracy") if config.output == "text" else ()
        for side, weight in (("answer", config.answer_token_weight), ("query", config.query_token_weight)):
            names += (f"train_{side}_token_loss", f"val_{side}_token_loss") if weight > 0 else ()
        return names

    @classmethod
    def check_setup(cls, config: Seq2SeqConfig, training: Any, data: Any) -> None:
        """Refuses a dataset that lacks the columns this config reads.

        Args:
            config: The family config.
            training: The training settings (unused).
            data: Has ``columns``, the per-row shape of each dataset column.

        Raises:
            ValueError: ``family.input``/``family.output`` naming the column it needs, when the
                column is absent or not a sequence of tokens ``(L,)`` / glyphs ``(L, 28, 28)``.
        """
        columns = {name: tuple(shape) for name, shape in data.columns.items()}
        needs = [("input", config.input, COLUMNS["input"][config.input]),
                 ("output", config.output, COLUMNS["output"][config.output]),
                 ("output", config.output, TARGET_COLUMN)]
        if config.query_token_weight > 0:
            needs.append(("input", config.input, COLUMNS["input"]["text"]))  # the auxiliary loss's targets
        for side, kind, column in needs:
            expected = "(L,) token ids" if column in ("query", "answer") else "(L, 28, 28) glyphs"
            shape = columns.get(column)
            good = shape is not None and (len(shape) == 1 if column in ("query", "answer")
                                          else len(shape) == 3 and shape[1:] == GLYPH_SHAPE[1:])
            if not good:
                got = f"its shape {shape}" if shape is not None else f"columns {sorted(columns)}"
                raise ValueError(f"family.{side}: {kind!r} needs the dataset column {column!r} of {expected}, "
                                 f"which dataset.{side}: {kind} provides (got {got})")
        if columns.get("answer_images", (columns[TARGET_COLUMN][0],))[0] != columns[TARGET_COLUMN][0]:
            raise ValueError(f"family.output: answer and answer_images need as many characters (got "
                             f"{columns[TARGET_COLUMN]} and {columns['answer_images']})")

    def configure_optimizers(self, training: Any) -> list[torch.optim.Optimizer]:
        """``[training.optimizer from training.lr]`` with the config's gradient clipping and lr decay.

        Args:
            training: The trial's training spec (``optimizer``, ``lr``).
        """
        return [_OPTIMIZERS[training.optimizer](self.parameters(), lr=training.lr, max_norm=self.config.max_grad_norm,
                                                half_life=self.config.lr_half_life)]

    # Pieces

    def _read_query(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """The query's per-character codes and the encoder's inputs, both ``(B, Lq, E)``, in reading
        order (the same tensor unless ``glyph_reading`` is ``tokens``)."""
        x = batch[COLUMNS["input"][self.config.input]]  # (B, Lq) or (B, Lq, 28, 28)
        if self.config.reverse_query:
            x = x.flip(1)
        if self.config.input == "image":
            x = x / PIXEL_MAX
            if self.training and self.config.glyph_jitter:
                x = jitter(x, self.config.glyph_jitter)
        codes = self.reader(x)
        if self.glyph_tokens is None:
            return codes, codes
        probabilities = torch.softmax(self.query_token_head(codes), dim=2)  # (B, Lq, VOCAB_SIZE)
        return codes, probabilities @ self.glyph_tokens.weight

    def _answer_inputs(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The true answer's characters as the output side reads them: ids ``(B, La)`` or glyphs in [0, 1]."""
        x = batch[COLUMNS["output"][self.config.output]]
        return x / PIXEL_MAX if self.config.output == "image" else x

    def encode_query(self, batch: dict[str, torch.Tensor]) -> tuple[Any, torch.Tensor, torch.Tensor]:
        """The decoder's initial state, the context vector and the query's character codes.

        Returns:
            ``(state, context, codes)``: ``state`` is ``h`` (GRU) or ``(h, c)`` (LSTM), each
            ``(decoder_layers, B, H)``; ``context`` ``(B, H)`` is the encoder's top-layer final ``h``;
            ``codes`` ``(B, Lq, E)`` the query characters' codes (token embeddings or glyph codes),
            in reading order.
        """
        codes, inputs = self._read_query(batch)
        _, state = self.encoder(inputs)
        states = state if isinstance(state, tuple) else (state,)
        context = states[0][-1]  # (B, H)
        if self.bridge is not None:
            b = context.shape[0]
            mapped = []
            for i, (s, linear) in enumerate(zip(states, self.bridge)):
                flat = linear(s.transpose(0, 1).reshape(b, -1))  # (B, decoder_layers * H)
                flat = torch.tanh(flat) if i == 0 else flat  # h lies in (-1, 1); an LSTM's c does not
                mapped.append(flat.view(b, self.config.num_decoder_layers, -1).transpose(0, 1).contiguous())
            states = tuple(mapped)
        return (states if len(states) == 2 else states[0]), context, codes

    def _step_inputs(self, previous: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """Decoder inputs ``(B, T, E + H)`` from previous-character vectors ``(B, T, E)`` and the context."""
        return torch.cat([previous, context[:, None].expand(-1, previous.shape[1], -1)], dim=2)

    def teacher_forced(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """Decodes with the true previous characters.

        Returns:
            ``(per-sample NLL (B,) in nats, logits (see Seq2SeqOutput), auxiliary token losses)``:
            the latter are scalars (nats per sample, batch mean) by name, for positive weights.
        """
        state, context, codes = self.encode_query(batch)
        answer = self._answer_inputs(batch)  # (B, La) ids or (B, La, 28, 28)
        previous = self.start.expand(answer.shape[0], 1, -1)  # (B, 1, E)
        if answer.shape[1] > 1:
            previous = torch.cat([previous, self.output.read(answer[:, :-1])], dim=1)  # (B, La, E)
        outputs, _ = self.decoder(self._step_inputs(previous, context), state)  # (B, La, H)
        nll, logits = self.output.nll(outputs, answer)
        auxiliary = {}
        if self.answer_token_head is not None:
            auxiliary["answer_token_loss"] = _token_nll(self.answer_token_head(outputs), batch[TARGET_COLUMN])
        if self.config.query_token_weight > 0:
            query = batch[COLUMNS["input"]["text"]]
            auxiliary["query_token_loss"] = _token_nll(self.query_token_head(codes),
                                                       query.flip(1) if self.config.reverse_query else query)
        return nll, logits, auxiliary

    @torch.no_grad()
    def greedy_answer(self, batch: dict[str, torch.Tensor], length: int | None = None) -> torch.Tensor:
        """Greedy decoding: each step reads back the previous step's own prediction.

        Args:
            batch: Holds the query column (and, when ``length`` is None, ``answer`` for the length).
            length: Answer characters to emit; None: as many as ``batch["answer"]`` has.

        Returns:
            Token ids ``(B, La)`` (int64) for text outputs, glyphs ``(B, La, 28, 28)`` in [0, 1]
            for image outputs.
        """
        length = batch[TARGET_COLUMN].shape[1] if length is None else length
        state, context, _ = self.encode_query(batch)
        previous = self.start.expand(context.shape[0], 1, -1)
        emitted = []
        for _ in range(length):
            outputs, state = self.decoder(self._step_inputs(previous, context), state)  # (B, 1, H)
            step, previous = self.output.greedy(outputs)
            emitted.append(step)
        return torch.cat(emitted, dim=1)

    # The loop's interface

    def forward(self, batch: dict[str, torch.Tensor]) -> Seq2SeqOutput:
        """Teacher-forced loss; in eval mode also the greedy answers for the metrics.

        Args:
            batch: The columns of :data:`COLUMNS` this config reads, and ``answer`` (float ``(B, La)``).

        Returns:
            :class:`Seq2SeqOutput`.
        """
        nll, logits, extra = self.teacher_forced(batch)
        recon_loss = nll.mean()
        weights = {"answer_token_loss": self.config.answer_token_weight,
                   "query_token_loss": self.config.query_token_weight}
        loss = recon_loss + sum(weights[name] * value for name, value in extra.items())
        predictions: dict[str, torch.Tensor] = {}
        if not self.training:  # scored after evaluation passes only
            greedy = self.greedy_answer(batch)
            predictions[f"{TARGET_COLUMN}_true"] = batch[TARGET_COLUMN].detach()
            key = "answer_pred" if self.config.output == "text" else "answer_images_pred"
            predictions[key] = greedy.float() if self.config.output == "text" else greedy.half()
        return Seq2SeqOutput(loss=loss, recon_loss=recon_loss, logits=logits, predictions=predictions, extra=extra)

    @torch.no_grad()
    def reconstruct(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The greedy answer: token ids as float ``(B, La)`` or glyph means ``(B, La, 28, 28)`` in [0, 1]."""
        return self.greedy_answer(batch).float()

    def validation_metrics(self, predictions: dict[str, torch.Tensor]) -> dict[str, float]:
        """Scores of the concatenated validation predictions (``forward``'s ``predictions``).

        Returns:
            Text outputs: ``sequence_accuracy`` (fraction of answers right in every character) and
            ``char_accuracy`` (fraction of answer characters right), both in [0, 1]. Image outputs:
            ``{}`` (the dataset's readback hook scores them).
        """
        if self.config.output != "text":
            return {}
        correct = predictions["answer_pred"].long() == predictions[f"{TARGET_COLUMN}_true"].long()  # (N, La)
        return {"sequence_accuracy": float(correct.all(dim=1).float().mean()),
                "char_accuracy": float(correct.float().mean())}
