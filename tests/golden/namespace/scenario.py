def run(module, model):
    net = getattr(module, f"{model.capitalize()}Model")()
    return {"forward": net.forward(2), "mlp": type(net.mlp).__name__}
