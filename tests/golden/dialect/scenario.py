def run(module, model):
    prefix = model.capitalize()
    config = getattr(module, f"{prefix}Config")(extra_key=1)
    net = getattr(module, f"{prefix}Model")(config)
    layer = getattr(module, f"{prefix}Layer")(config, 5)
    return {
        "config": (config.hidden, config.fused, config.extra, config.flavour, hasattr(config, "missing")),
        "layer": (layer.idx, layer.width, layer.span, layer.scale, layer.describe(), layer.title()),
        "forward": layer.forward([1, 2]),
        "head": getattr(module, f"{prefix}Head")().out(),
        "model": (net.initialized, net.head, net.scale(), type(net.norm).__name__, net.norm.scale()),
    }
