"""Parameter counts: closed form against published totals and against transformers on the meta device."""
import pytest

from scaling import catalog
from scaling.params import count_params, count_params_meta
from scaling.vocab import vocab_rows

# Totals from the model cards (before any vocabulary change).
PUBLISHED = {
    ("qwen2.5", "0.5B"): 494_032_768,
    ("qwen2.5", "1.5B"): 1_543_714_304,
    ("qwen2.5", "3B"): 3_085_938_688,
    ("qwen2.5", "7B"): 7_615_616_512,
    ("llama3.2", "1B"): 1_235_814_400,
    ("llama3.2", "3B"): 3_212_749_824,
}
# Non-embedding counts from the Pythia README table.
PYTHIA_NONEMB = {"70M": 18_915_328, "160M": 85_056_000, "410M": 302_311_424, "1B": 805_736_448,
                 "1.4B": 1_208_602_624}
MEMBERS = [m for fam in catalog.FAMILIES.values() for m in fam.values()]


@pytest.mark.parametrize("fam,name", sorted(PUBLISHED))
def test_published_totals_exact(fam, name):
    assert count_params(catalog.FAMILIES[fam][name].config).total == PUBLISHED[(fam, name)]


@pytest.mark.parametrize("name", sorted(PYTHIA_NONEMB))
def test_pythia_nonembedding_published(name):
    assert count_params(catalog.FAMILIES["pythia"][name].config).nonembedding == PYTHIA_NONEMB[name]


SETUPS = [("text", "append"), ("interleaved", "append"), ("interleaved", "tokenizer"), ("textless", "append")]
CASES = [(m, s, r) for m in MEMBERS for s, r in SETUPS if r != "tokenizer" or m.tokenizer_len is not None]


@pytest.mark.parametrize("member,setup,resize", CASES, ids=lambda v: getattr(v, "hf_id", v))
def test_closed_form_equals_meta_device(member, setup, resize):
    cfg = member.config
    rows, shared = vocab_rows(setup, cfg["vocab_size"], 500, resize, 1, member.tokenizer_len)
    assert count_params(cfg, rows, shared) == count_params_meta(cfg, rows, shared)


def test_interleaved_adds_502_rows_qwen_untied():
    cfg = catalog.FAMILIES["qwen2.5"]["7B"].config
    rows, shared = vocab_rows("interleaved", cfg["vocab_size"], 500)
    c = count_params(cfg, rows, shared)
    assert (rows, c.new_rows) == (152064 + 502, 502)
    assert c.new_row_params == 2 * 502 * 3584          # untied: embedding and head rows
    assert c.total == 7_615_616_512 + 2 * 502 * 3584
    assert c.output_head == c.embedding == 152566 * 3584
    assert c.nonembedding == c.total - 2 * 152566 * 3584


def test_slamkit_tokenizer_resize_qwen():
    # SlamKit resizes to len(tokenizer) after adding 502 tokens: 151,665 + 502 = 152,167 rows.
    cfg = catalog.FAMILIES["qwen2.5"]["0.5B"].config
    rows, shared = vocab_rows("interleaved", cfg["vocab_size"], 500, "tokenizer", tokenizer_len=151665)
    c = count_params(cfg, rows, shared)
    assert rows == 152167 and c.new_rows == 152167 - 151936
    assert c.total == 494_032_768 + (152167 - 151936) * 896     # tied: one matrix


def test_textless_vocabulary_and_padding():
    cfg = catalog.FAMILIES["llama3.2"]["1B"].config
    rows, shared = vocab_rows("textless", cfg["vocab_size"], 500)
    assert (rows, shared) == (502, 0)
    c = count_params(cfg, rows, shared)
    assert c.embedding == 502 * 2048 and c.output_head == 0 and c.new_rows == 502
    assert c.total == 1_235_814_400 - 128256 * 2048 + 502 * 2048
    assert vocab_rows("textless", cfg["vocab_size"], 500, pad_to=64) == (512, 0)
    assert vocab_rows("interleaved", 128256, 500, pad_to=64)[0] == 128768


@pytest.mark.parametrize("cfg", [
    {"model_type": "llama", "hidden_size": 48, "intermediate_size": 100, "num_hidden_layers": 3,
     "num_attention_heads": 6, "num_key_value_heads": 2, "vocab_size": 300, "attention_bias": True,
     "mlp_bias": True, "tie_word_embeddings": False},
    {"model_type": "mistral", "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
     "num_attention_heads": 4, "num_key_value_heads": 4, "vocab_size": 111, "head_dim": 32,
     "tie_word_embeddings": True},
    {"model_type": "qwen3", "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
     "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 200, "head_dim": 24,
     "tie_word_embeddings": True},
    {"model_type": "gpt_neox", "hidden_size": 64, "intermediate_size": 200, "num_hidden_layers": 2,
     "num_attention_heads": 4, "vocab_size": 333, "tie_word_embeddings": False},
    {"model_type": "opt", "hidden_size": 64, "ffn_dim": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
     "vocab_size": 99, "max_position_embeddings": 64, "word_embed_proj_dim": 32, "do_layer_norm_before": False},
], ids=lambda c: c["model_type"])
def test_closed_form_small_variants(cfg):
    for rows, base in ((cfg["vocab_size"], None), (cfg["vocab_size"] + 7, cfg["vocab_size"])):
        assert count_params(cfg, rows, base) == count_params_meta(cfg, rows, base)
