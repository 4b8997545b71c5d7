import functools


@functools.lru_cache(maxsize=None)
def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)


@functools.cache
def slow_square(x):
    slow_square.calls = getattr(slow_square, "calls", 0) + 1
    return x * x


def run_every_minute(meta):
    values = [fib(n) for n in range(30)]
    squares = [slow_square(3), slow_square(3), slow_square(4)]
    info = fib.cache_info()
    return {"fib29": values[-1], "hits": info.hits, "squares": squares, "name": fib.__name__}
