"""trainables/families/seq2seq.py: teacher-forced losses, greedy decoding, the bridge, the metrics,
the setup check and the refused configs."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from datasets.arithmetic import ANSWER_LENGTH, GLYPH_SIZE, PIXEL_MAX, QUERY_LENGTH, VOCAB, encode
from trainables.families.seq2seq import GLYPH_SHAPE, VOCAB_SIZE, Seq2Seq, Seq2SeqConfig, jitter
from trainables.families.seq2seq import PIXEL_MAX as MODEL_PIXEL_MAX
from trainables.protocol import supports
from trainables.registry import get_family
from trainables.training import TrainingSpec

TINY = {"cell": "gru", "hidden_dim": 32, "embedding_dim": 8, "filters": [4, 8]}


def arithmetic_batch(setup: dict, batch: int, seed: int) -> dict[str, torch.Tensor]:
    """Random arithmetic queries with their true answers, the columns of ``datasets/arithmetic.py``.

    ``query`` ``(B, 5)`` and ``answer`` ``(B, 3)`` token ids as float32 (as the loop casts them); with
    ``input: image`` / ``output: image`` in ``setup["config"]`` also ``query_images`` ``(B, 5, 28, 28)`` /
    ``answer_images`` ``(B, 3, 28, 28)``: random intensities 0-255 (binary strokes, like glyphs).
    (The batch builder of ``seq2seq``'s row in tests/trainables/test_families.py's SETUPS.)
    """
    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, 100, size=(2, batch))
    minus = rng.integers(0, 2, size=batch).astype(bool)
    queries = [f"{x}{'-' if m else '+'}{y}" for x, y, m in zip(a, b, minus)]
    answers = [str(x - y if m else x + y) for x, y, m in zip(a, b, minus)]
    out = {"query": torch.from_numpy(encode(queries, QUERY_LENGTH)).float(),
           "answer": torch.from_numpy(encode(answers, ANSWER_LENGTH)).float()}
    config = setup["config"]
    generator = torch.Generator().manual_seed(seed)
    for side, column, length in (("input", "query_images", QUERY_LENGTH), ("output", "answer_images", ANSWER_LENGTH)):
        if config.get(side) == "image":
            out[column] = (torch.rand(batch, length, GLYPH_SIZE, GLYPH_SIZE, generator=generator) < 0.2).float() * 255
    return out


def build(seed: int = 0, **config) -> Seq2Seq:
    torch.manual_seed(seed)
    cfg = Seq2SeqConfig(**{**TINY, **config})
    shape = (QUERY_LENGTH, GLYPH_SIZE, GLYPH_SIZE) if cfg.input == "image" else (QUERY_LENGTH,)
    return Seq2Seq(cfg, shape)


def test_the_family_agrees_with_the_dataset():
    assert VOCAB_SIZE == len(VOCAB) and MODEL_PIXEL_MAX == PIXEL_MAX and GLYPH_SHAPE == (1, GLYPH_SIZE, GLYPH_SIZE)
    family = get_family("seq2seq")
    assert family.model_cls is Seq2Seq and family.epoch_metrics == (
        "train_loss", "train_recon_loss", "val_loss", "val_recon_loss")
    assert family.reported_metrics(Seq2SeqConfig()) == family.epoch_metrics + (
        "val_sequence_accuracy", "val_char_accuracy")
    assert family.reported_metrics(Seq2SeqConfig(output="image")) == family.epoch_metrics  # readback: the dataset's
    model = build()
    assert not supports(model, "encode") and not supports(model, "sample")  # not a VAE: no MIG, no sample metrics
    assert not supports(model, "generate") and not supports(model, "latent_dim")  # no codes to interpolate


def test_a_few_queries_are_memorised_and_decoded_greedily():
    setup = {"config": {}}
    batch = arithmetic_batch(setup, 8, seed=3)
    model = build(hidden_dim=64, embedding_dim=16)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.eval()
    with torch.no_grad():
        before = float(model(batch).loss)
    assert before == pytest.approx(ANSWER_LENGTH * math.log(VOCAB_SIZE), rel=0.15)  # untrained: ~uniform tokens
    model.train()
    for _ in range(150):
        optimizer.zero_grad()
        model(batch).loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        out = model(batch)
    assert float(out.loss) < 0.02 * before
    assert torch.equal(model.reconstruct(batch), batch["answer"])  # greedy decoding gives every answer exactly
    assert torch.equal(out.predictions["answer_pred"], batch["answer"])
    assert model.validation_metrics(out.predictions) == {"sequence_accuracy": 1.0, "char_accuracy": 1.0}


@pytest.mark.parametrize("kinds", [("image", "text"), ("text", "image"), ("image", "image")])
def test_image_sides_give_shapes_and_finite_losses(kinds):
    config = {"input": kinds[0], "output": kinds[1], "cell": "lstm", "encoder_layers": 2}
    batch = arithmetic_batch({"config": config}, 4, seed=0)
    model = build(**config).eval()
    out = model(batch)
    terms = {k: float(v.detach()) for k, v in out.terms().items()}
    assert set(terms) == {"loss", "recon_loss"} and all(math.isfinite(v) for v in terms.values())
    if kinds[1] == "image":
        # Untrained logits near 0: each pixel costs about log 2 nats, whatever its target.
        assert terms["recon_loss"] == pytest.approx(ANSWER_LENGTH * GLYPH_SIZE**2 * math.log(2), rel=0.1)
        assert out.logits.shape == (4, ANSWER_LENGTH, GLYPH_SIZE, GLYPH_SIZE)
        generated = out.predictions["answer_images_pred"]
        assert generated.shape == (4, ANSWER_LENGTH, GLYPH_SIZE, GLYPH_SIZE)
        assert float(generated.min()) >= 0 and float(generated.max()) <= 1
        assert model.reconstruct(batch).shape == generated.shape and model.validation_metrics(out.predictions) == {}
    else:
        assert out.logits.shape == (4, ANSWER_LENGTH, VOCAB_SIZE)
        assert out.predictions["answer_pred"].shape == (4, ANSWER_LENGTH)
        assert model.reconstruct(batch).shape == (4, ANSWER_LENGTH)
    assert torch.equal(out.predictions["answer_true"], batch["answer"])
    assert torch.equal(model.reconstruct(batch), model.reconstruct(batch))  # greedy is deterministic
    model.train()
    assert model(batch).predictions == {}  # training passes collect nothing
    model(batch).loss.backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_the_bridge_maps_between_depths(cell):
    batch = arithmetic_batch({"config": {}}, 4, seed=1)
    deep = build(cell=cell, encoder_layers=3, decoder_layers=1)
    assert deep.bridge is not None and len(deep.bridge) == (2 if cell == "lstm" else 1)
    state, context, codes = deep.encode_query(batch)
    for s in state if cell == "lstm" else (state,):
        assert s.shape == (1, 4, 32)
    assert context.shape == (4, 32) and codes.shape == (4, QUERY_LENGTH, 8)
    deep(batch).loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in deep.bridge.parameters())
    assert build(cell=cell, encoder_layers=2).bridge is None  # tied depths: the final states pass over as they are
    assert build(cell=cell, encoder_layers=2, decoder_layers=2).bridge is None


def test_validation_metrics_known_answers():
    truth = torch.tensor([[4.0, 6, 12], [1, 9, 8], [11, 2, 12], [0, 12, 12]])
    pred = truth.clone()
    pred[1, 2] = 7  # one character wrong: the answer is wrong
    pred[2] = torch.tensor([2.0, 11, 2])  # all three wrong
    scores = build().validation_metrics({"answer_pred": pred, "answer_true": truth})
    assert scores == {"sequence_accuracy": 0.5, "char_accuracy": pytest.approx(8 / 12)}


def data_description(**columns) -> SimpleNamespace:
    return SimpleNamespace(input_shape=next(iter(columns.values())), columns=columns, classes={}, has_factors=False)


def test_check_setup_reads_the_arithmetic_datasets_description():
    from datasets.registry import get_dataset

    entry = get_dataset("arithmetic")
    data = entry.load(entry.options_cls(name="arithmetic", max_operand=9), 0).describe()
    assert data.columns == {"query": (QUERY_LENGTH,), "answer": (ANSWER_LENGTH,)}
    Seq2Seq.check_setup(Seq2SeqConfig(), None, data)
    with pytest.raises(ValueError, match=r"family.input: 'image' needs the dataset column 'query_images'.*"
                                         r"dataset.input: image provides \(got columns \['answer', 'query'\]\)"):
        Seq2Seq.check_setup(Seq2SeqConfig(input="image"), None, data)


def test_check_setup_refuses_a_kind_the_dataset_does_not_provide():
    text = data_description(query=(5,), answer=(3,))
    images = data_description(query=(5,), answer=(3,), query_images=(5, 28, 28), answer_images=(3, 28, 28))
    Seq2Seq.check_setup(Seq2SeqConfig(), None, text)
    for config in (Seq2SeqConfig(), Seq2SeqConfig(input="image", output="image")):
        Seq2Seq.check_setup(config, None, images)  # token columns come with every dataset
    with pytest.raises(ValueError, match="family.input: 'image' needs the dataset column 'query_images'"):
        Seq2Seq.check_setup(Seq2SeqConfig(input="image"), None, text)
    with pytest.raises(ValueError, match="family.output: 'image' needs the dataset column 'answer_images'"):
        Seq2Seq.check_setup(Seq2SeqConfig(output="image"), None, text)
    odd = data_description(query=(5,), answer=(3,), query_images=(5, 32, 32))
    with pytest.raises(ValueError, match=r"family.input.*\(5, 32, 32\)"):
        Seq2Seq.check_setup(Seq2SeqConfig(input="image"), None, odd)
    with pytest.raises(ValueError, match="family.output.*'answer'"):
        Seq2Seq.check_setup(Seq2SeqConfig(), None, data_description(query=(5,)))
    glyphs_only = data_description(answer=(3,), query_images=(5, 28, 28))
    Seq2Seq.check_setup(Seq2SeqConfig(input="image"), None, glyphs_only)
    with pytest.raises(ValueError, match="family.input.*'query'"):  # the auxiliary loss's targets
        Seq2Seq.check_setup(Seq2SeqConfig(input="image", query_token_weight=1.0), None, glyphs_only)


@pytest.mark.parametrize("field, value", [
    ("hidden_dim", 0), ("embedding_dim", 0), ("encoder_layers", 0), ("encoder_layers", 5), ("decoder_layers", 0),
    ("decoder_layers", 5), ("cell", "rnn"), ("input", "audio"), ("output", "speech"), ("filters", []),
    ("filters", [8, 8, 8]), ("filters", [0]), ("glyph_jitter", 7), ("max_grad_norm", 0.0), ("lr_half_life", 0),
    ("answer_token_weight", -1.0), ("query_token_weight", -1.0), ("not_a_field", 1),
])
def test_bad_config_values_are_refused_naming_the_field(field, value):
    with pytest.raises(ValidationError, match=field):
        Seq2SeqConfig(**{field: value})


def test_an_input_shape_that_is_not_characters_is_refused():
    with pytest.raises(ValueError, match="input_shape"):
        Seq2Seq(Seq2SeqConfig(input="image"), (5, 32, 32))
    with pytest.raises(ValueError, match="input_shape"):
        Seq2Seq(Seq2SeqConfig(), (1, 5, 5, 5))


def test_glyph_tokens_bottleneck_the_encoder_inputs():
    config = {"input": "image", "glyph_reading": "tokens"}
    batch = arithmetic_batch({"config": config}, 4, seed=6)
    model = build(**config).eval()
    with torch.no_grad():
        codes, inputs = model._read_query(batch)
        probabilities = torch.softmax(model.query_token_head(codes), dim=2)
    torch.testing.assert_close(inputs, probabilities @ model.glyph_tokens.weight)  # a mix of token embeddings
    assert set(model(batch).terms()) == {"loss", "recon_loss"}  # the head is trained end to end, no token loss
    with pytest.raises(ValidationError, match="glyph_reading"):
        Seq2SeqConfig(glyph_reading="tokens")  # text input has no glyphs
    with pytest.raises(ValidationError, match="glyph_jitter"):
        Seq2SeqConfig(glyph_jitter=1)


def test_token_weights_need_image_sides():
    with pytest.raises(ValidationError, match="answer_token_weight"):
        Seq2SeqConfig(answer_token_weight=1.0)
    with pytest.raises(ValidationError, match="query_token_weight"):
        Seq2SeqConfig(query_token_weight=1.0, output="image")


def test_token_weights_add_named_token_losses():
    config = {"input": "image", "output": "image", "answer_token_weight": 10.0, "query_token_weight": 2.0}
    batch = arithmetic_batch({"config": config}, 4, seed=2)
    model = build(**config).eval()
    with torch.no_grad():
        terms = {k: float(v) for k, v in model(batch).terms().items()}
    assert set(terms) == {"loss", "recon_loss", "answer_token_loss", "query_token_loss"}
    # Untrained heads: about log 13 nats per token.
    assert terms["answer_token_loss"] == pytest.approx(ANSWER_LENGTH * math.log(VOCAB_SIZE), rel=0.15)
    assert terms["query_token_loss"] == pytest.approx(QUERY_LENGTH * math.log(VOCAB_SIZE), rel=0.15)
    expected = terms["recon_loss"] + 10.0 * terms["answer_token_loss"] + 2.0 * terms["query_token_loss"]
    assert terms["loss"] == pytest.approx(expected, rel=1e-6)
    assert Seq2Seq.config_metrics(Seq2SeqConfig(**config)) == (
        "train_answer_token_loss", "val_answer_token_loss", "train_query_token_loss", "val_query_token_loss")
    plain = build(input="image", output="image")
    assert plain.answer_token_head is None and plain.query_token_head is None


@pytest.mark.parametrize("reverse", [False, True])
def test_the_query_token_loss_scores_the_glyphs_in_reading_order(reverse):
    config = {"input": "image", "query_token_weight": 1.0, "reverse_query": reverse}
    batch = arithmetic_batch({"config": config}, 8, seed=5)
    model = build(**config).eval()
    with torch.no_grad():
        term = float(model(batch).extra["query_token_loss"])
        _, _, codes = model.encode_query(batch)  # (B, Lq, E) in reading order
        logits = model.query_token_head(codes).transpose(1, 2)  # (B, V, Lq)
        ordered = batch["query"].flip(1) if reverse else batch["query"]
        expected = torch.nn.functional.cross_entropy(logits, ordered.long(), reduction="none").sum(1).mean()
        other = torch.nn.functional.cross_entropy(logits, ordered.flip(1).long(), reduction="none").sum(1).mean()
    assert term == pytest.approx(float(expected), rel=1e-6) and abs(term - float(other)) > 1e-4


def test_the_optimizer_clips_the_gradient_norm_and_halves_the_lr():
    model = build(max_grad_norm=0.5, lr_half_life=4)
    (optimizer,) = model.configure_optimizers(TrainingSpec(lr=1e-2, optimizer="adam"))
    for p in model.parameters():
        p.grad = torch.full_like(p, 3.0)
    optimizer.step()
    norm = torch.sqrt(sum((p.grad**2).sum() for p in model.parameters()))
    assert float(norm) == pytest.approx(0.5, rel=1e-4)  # clipped in place before the step
    for _ in range(3):
        optimizer.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(5e-3)  # 4 steps: one half-life
    (restored,) = model.configure_optimizers(TrainingSpec(lr=1e-2, optimizer="adam"))
    restored.load_state_dict(optimizer.state_dict())  # a resumed trial continues the decay
    assert restored.param_groups[0]["lr"] == pytest.approx(5e-3)
    (plain,) = build().configure_optimizers(TrainingSpec(lr=1e-2, optimizer="sgd"))
    assert isinstance(plain, torch.optim.SGD)
    plain.step()
    assert plain.param_groups[0]["lr"] == 1e-2  # no half-life: constant


def test_jitter_shifts_each_glyph_within_bounds():
    glyphs = torch.zeros(50, 3, 9, 9)
    glyphs[..., 4, 4] = 1.0  # one dot in the middle
    moved = jitter(glyphs, 2, torch.Generator().manual_seed(0))
    assert moved.shape == glyphs.shape and torch.equal(moved.sum(dim=(2, 3)), glyphs.sum(dim=(2, 3)))
    rows, cols = torch.nonzero(moved.reshape(150, 9, 9), as_tuple=True)[1:]
    assert rows.min() >= 2 and rows.max() <= 6 and cols.min() >= 2 and cols.max() <= 6
    assert len(set(zip(rows.tolist(), cols.tolist()))) > 10  # each glyph its own offset
    assert torch.equal(jitter(glyphs, 0), glyphs)


def test_glyph_jitter_applies_in_training_only():
    config = {"input": "image", "glyph_jitter": 2}
    batch = arithmetic_batch({"config": config}, 4, seed=4)
    model = build(**config).eval()
    with torch.no_grad():
        assert torch.equal(model(batch).loss, model(batch).loss)  # evaluation reads the glyphs as they are
    model.train()
    torch.manual_seed(0)
    first = model(batch).loss
    torch.manual_seed(1)
    assert not torch.equal(model(batch).loss, first)
