import operator
from functools import partial, partialmethod, reduce


def scale(value, factor=1, offset=0):
    return value * factor + offset


class Light:
    def __init__(self):
        self.state = "off"

    def set_state(self, state):
        self.state = state
        return self

    turn_on = partialmethod(set_state, "on")
    turn_off = partialmethod(set_state, "off")


def run_every_minute(meta):
    double = partial(scale, factor=2)
    shifted = partial(double, offset=1)
    product = reduce(operator.mul, range(1, 6), 1)
    merged = reduce(lambda a, b: {**a, **b}, [{"a": 1}, {"b": 2}, {"a": 3}])
    light = Light().turn_on()
    return {"double": double(4), "shifted": shifted(4), "product": product, "merged": merged,
            "light": light.state, "keywords": double.keywords}
