def run(module, model):
    prefix = model.capitalize()
    config = getattr(module, f"{prefix}Config")()
    layer = getattr(module, f"{prefix}Layer")(config) if model != "llama" else module.LlamaLayer(config, 1)
    embed = getattr(module, f"{prefix}Embed")(config)
    return {
        "mlp": (type(layer.mlp).__name__, layer.mlp.width, layer.mlp.kind, getattr(layer.mlp, "extra", None)),
        "layer": (layer.config.hidden, hasattr(layer, "layer_idx")),
        "embed": (embed.table, embed.size),
        "head": getattr(module, f"{prefix}Head")().tag("?"),
        "bag": dict(getattr(module, f"{prefix}Bag")(config)),
    }
