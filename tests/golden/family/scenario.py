def run(module, model):
    prefix = "".join(part.capitalize() for part in model.split("_"))
    config = getattr(module, f"{prefix}Config")()
    net = getattr(module, f"{prefix}Model")(config)
    layer = net.layers[0]
    return {
        "forward": net.forward(1),
        "types": (type(layer).__name__, type(layer.attn).__name__, type(layer.mlp).__name__),
        "prefix": net.base_model_prefix,
        "model_type": config.model_type,
        "experts": config.experts,
    }
