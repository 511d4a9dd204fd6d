import pytest

from modbuild.naming import Prefix, PrefixError, Renamer, infer_camel_prefixes

LLAMA_TO_QWEN2 = Renamer(Prefix.from_model("llama"), Prefix.from_model("qwen2"))


@pytest.mark.parametrize(
    "name, expected",
    [
        ("LlamaForCausalLM", "Qwen2ForCausalLM"),
        ("llama", "qwen2"),
        ("LLAMA_PRETRAINED_INIT", "QWEN2_PRETRAINED_INIT"),
        ("llama_model", "qwen2_model"),
        ("Llama3RotaryEmbedding", "Llama3RotaryEmbedding"),  # a digit makes another word
        ("is_llama3", "is_llama3"),
        ("MyLlamaLayer", "MyQwen2Layer"),
        ("XLlama", "XLlama"),  # inside an acronym
        ("llamas", "llamas"),
        ("rotate_half", "rotate_half"),
    ],
)
def test_identifier_segments(name, expected):
    assert LLAMA_TO_QWEN2.identifier(name) == expected


@pytest.mark.parametrize(
    "value, expected",
    [
        ("llama", "qwen2"),
        ("llama.", "qwen2."),
        ("LlamaModel", "Qwen2Model"),
        ("llama3", "llama3"),
        ("model.layers.0", "model.layers.0"),
        ("Initializing the `LlamaConfig`", "Initializing the `Qwen2Config`"),
        ("a llama3 rope, llamas", "a llama3 rope, llamas"),
    ],
)
def test_string_constants_by_the_segment_rule(value, expected):
    assert LLAMA_TO_QWEN2.string(value) == expected


def test_underscored_model_names():
    renamer = Renamer(Prefix.from_model("qwen2_moe"), Prefix.from_model("qwen3_moe"))
    assert renamer.identifier("Qwen2MoeSparseMoeBlock") == "Qwen3MoeSparseMoeBlock"
    assert renamer.identifier("qwen2_moe") == "qwen3_moe"
    assert renamer.identifier("QWEN2_MOE_X") == "QWEN3_MOE_X"


def test_infer_prefixes_from_class_pairs():
    assert infer_camel_prefixes([("Qwen2MLP", "LlamaMLP"), ("GemmaX", "LlamaX")][:1]) == ("Qwen2", "Llama")
    assert infer_camel_prefixes([("GemmaMLP", "LlamaMLP")]) == ("Gemma", "Llama")  # shared trailing "a"
    pairs = [("Qwen3MoeMLP", "Qwen2MoeMLP")]
    assert infer_camel_prefixes(pairs, "qwen3_moe", "qwen2_moe") == ("Qwen3Moe", "Qwen2Moe")
    assert infer_camel_prefixes([("GPTNeoXMLP", "LlamaMLP")], "gpt_neox", "llama") == ("GPTNeoX", "Llama")
    assert infer_camel_prefixes([("Qwen2MoeSparseMoeBlock", "Qwen2MLP")]) is None


def test_an_acronym_prefix_keeps_its_last_capital():
    # HF's audio_spectrogram_transformer: `ASTAttention(ViTAttention)` share "Attention", not "TAttention"
    pairs = [("ASTAttention", "ViTAttention"), ("ASTLayer", "ViTLayer")]
    assert infer_camel_prefixes(pairs, "audio_spectrogram_transformer", "vit") == ("AST", "ViT")
    assert infer_camel_prefixes([("GPTMLP", "LlamaMLP")]) == ("GPT", "Llama")  # capitals on both sides: as before


def test_conflicting_prefixes_are_an_error():
    with pytest.raises(PrefixError, match="ambiguous prefix"):
        infer_camel_prefixes([("Qwen2MLP", "LlamaMLP"), ("MistralNorm", "LlamaNorm")])


def test_infer_prefixes_across_parents():
    from modbuild.naming import infer_prefixes

    # HF's ernie4_5_moe: the model's name as its classes spell it, then each parent's prefix under it
    pairs = {
        "llama": [("Ernie4_5_MoeRMSNorm", "LlamaRMSNorm")],
        "qwen3_moe": [("Ernie4_5_MoeMLP", "Qwen3MoeMLP")],
        "ernie4_5": [("Ernie4_5_MoeRotaryEmbedding", "Ernie4_5RotaryEmbedding")],
    }
    assert infer_prefixes(pairs, "ernie4_5_moe") == (
        "Ernie4_5_Moe",
        {"llama": "Llama", "qwen3_moe": "Qwen3Moe", "ernie4_5": "Ernie4_5"},
    )
    # informer over time_series_transformer, whose classes say `TimeSeries`
    pairs = {"time_series_transformer": [("InformerStdScaler", "TimeSeriesStdScaler")]}
    assert infer_prefixes(pairs, "informer") == ("Informer", {"time_series_transformer": "TimeSeries"})
    # two spellings of one name: the one with more humps
    pairs = {"paligemma": [("Gemma3Model", "PaliGemmaModel"), ("Gemma3Output", "PaligemmaOutput")]}
    assert infer_prefixes(pairs, "gemma3") == ("Gemma3", {"paligemma": "PaliGemma"})


def test_a_parent_prefix_tie_goes_to_the_parents_config_name():
    # HF's hunyuan_vl: its classes vote HunYuan and HunYuanDenseV1 equally; the parent's config class names it
    from modbuild.naming import infer_prefixes

    pairs = [
        ("HunYuanVLTextConfig", "HunYuanDenseV1Config"),
        ("HunYuanVLRotaryEmbedding", "HunYuanDenseV1RotaryEmbedding"),
        ("HunYuanVLDenseV1Attention", "HunYuanDenseV1Attention"),
    ]
    child, parents = infer_prefixes({"hunyuan_v1_dense": pairs}, "hunyuan_vl")
    assert (child, parents["hunyuan_v1_dense"]) == ("HunYuanVL", "HunYuanDenseV1")


def test_a_class_prefix_spelled_in_another_order_than_the_model_is_renamed():
    # HF's hunyuan_v1_dense spells its classes HunYuanDenseV1...: renaming must not skip code that lacks
    # the letters of "hunyuan_v1_dense" in that order
    import libcst as cst

    from modbuild.convert.rename import rename_node

    renamer = Renamer(Prefix("hunyuan_v1_dense", "HunYuanDenseV1"), Prefix("hunyuan_v1_moe", "HunYuanMoEV1"))
    node = cst.parse_statement("def f(config: HunYuanDenseV1Config):\n    return config\n")
    assert "HunYuanMoEV1Config" in cst.Module([rename_node(node, renamer)]).code
