def run(module, model):
    prefix = model.capitalize()
    config = getattr(module, f"{prefix}Config")(hidden_size=3)
    lm = getattr(module, f"{prefix}ForCausalLM")(config)
    layer = lm.__dict__[model].layers[0]
    return {
        "forward": lm.forward([1.0, 2.0, 3.0]),
        "attention": type(layer.self_attn).__name__,
        "prefix": (lm.base_model_prefix, lm.mapping_prefix, lm.architectures_key),
        "keys": lm.state_keys(),
        "rope": (type(layer.self_attn.rotary).__name__, config.rope_type, config.model_type),
    }
