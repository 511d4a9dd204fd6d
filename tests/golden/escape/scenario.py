def run(module, model):
    layer = getattr(module, f"{model.capitalize()}Layer")()
    return {"forward": layer.forward(3), "attention": type(layer.attn).__name__, "describe": layer.attn.describe()}
