"""Closures over values and over helpers; two functions sharing one qualified name."""


def double(x):
    return 2 * x


def make_scaler(factor):
    def scale(x):
        return double(x) * factor

    return scale


by_two = make_scaler(2)
by_three = make_scaler(3)


def both(x):
    return by_two(x) + by_three(x)


first = lambda x: x + 1  # noqa: E731
second = lambda x: x in {"alpha", "beta", "gamma", "delta"}  # noqa: E731


def both_lambdas(x):
    return first(x), second(x)
