import functools


class TransientError(Exception):
    pass


def retry(times=3, exceptions=(TransientError,)):
    def decorator(func):
        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            last = None
            for attempt in range(1, times + 1):
                try:
                    return func(*args, attempt=attempt, **kwargs)
                except exceptions as exc:
                    last = exc
                    wrapper.failures += 1
            raise RuntimeError(f"gave up after {times} attempts") from last

        wrapper.failures = 0
        return wrapper

    return decorator


@retry(times=4)
def flaky(succeed_on, attempt):
    """Succeeds on the given attempt."""
    if attempt < succeed_on:
        raise TransientError(f"attempt {attempt}")
    return f"ok on {attempt}"


def run_every_minute(meta):
    result = flaky(3)
    try:
        flaky(9)
    except RuntimeError as exc:
        gave_up = [str(exc), str(exc.__cause__)]
    return {"result": result, "failures": flaky.failures, "gave_up": gave_up,
            "doc": flaky.__doc__, "name": flaky.__name__, "wrapped": flaky.__wrapped__.__name__}
