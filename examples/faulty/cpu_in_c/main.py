def run_every_minute(meta):
    meta.logger.info("computing 3 ** (10 ** 9) in one C call")
    # One C call that runs for minutes: no Python bytecode boundary where a signal handler
    # could run, so only the kernel's RLIMIT_CPU (SIGXCPU, then SIGKILL) can stop it.
    x = pow(3, 10 ** 9)
    return x % 10
