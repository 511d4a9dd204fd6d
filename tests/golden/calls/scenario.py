class Config:
    hidden_size, heads, eps = 3, 2, 1e-3


def run(module, model):
    prefix = model.capitalize()
    layer = getattr(module, f"{prefix}Layer")(Config(), 2)
    norm = getattr(module, f"{prefix}Norm")(3, scale=2.0)
    return {
        "forward": layer.forward([1.0, 2.0]),
        "name": layer.name,
        "width": (layer.width, layer.keep),
        "describe": layer.describe(),
        "params": sorted(getattr(module, f"{prefix}Layer").param_names(Config())),
        "norm": (norm.forward([1.0]), norm.eps, hasattr(norm, "cache")),
        "two_arg": layer.two_arg(),
    }
