"""A second root: it defines `rotate` too."""


def rotate(x):
    return x * 10
