"""Every cap on what a run may send or ask for: one home, read by the child (to fail early with a
clear error) and by the parent (which enforces them: a compromised child skips its own checks).
docs/plugins.md ("Caps") and SECURITY.md state these numbers; change them together.
"""

from __future__ import annotations

KIB = 1024
MIB = 1024 * KIB

# -- frames (child -> supervisor) ------------------------------------------------------------
# Nesting of a plugin's JSON value (result, storage value, cache value).
MAX_VALUE_DEPTH = 100

# -- logs ------------------------------------------------------------------------------------
MAX_LOG_LINES = 1000  # per run
MAX_LOG_BYTES = 256 * KIB  # per run, UTF-8 bytes of the messages
MAX_LOG_LINE = 8 * KIB  # characters; a longer line is cut
LOG_LEVELS = ("debug", "info", "warning", "error")

# -- result and error ------------------------------------------------------------------------
MAX_RESULT_BYTES = 1 * MIB  # the result as JSON
MAX_ERROR_MESSAGE = 4000  # characters of an exception message (cut)
MAX_ERROR_TYPE = 200
MAX_TRACEBACK_LINES = 50
MAX_TRACEBACK_LINE = 1000

# -- storage writes, per run -----------------------------------------------------------------
MAX_STORAGE_KEY_BYTES = 1 * KIB
MAX_STORAGE_VALUE_BYTES = 256 * KIB  # one value as JSON
MAX_STORAGE_KEYS_PER_RUN = 1000  # keys written or deleted
MAX_STORAGE_WRITE_BYTES = 4 * MIB  # all values written, as JSON

# The largest frame a child may send: a result frame with the largest result and writes.
MAX_CHILD_FRAME_BYTES = MAX_RESULT_BYTES + MAX_STORAGE_WRITE_BYTES + 2 * MIB
# All a run may send the supervisor (frames are parsed by one thread, whose time this bounds).
MAX_RUN_RECEIVED_BYTES = 16 * MIB

# -- meta calls (cache and fetch) ------------------------------------------------------------
MAX_CALLS_PER_RUN = 10_000
MAX_CALLS_IN_FLIGHT_PER_RUN = 4  # an honest child has at most one (calls are synchronous)
MAX_FETCHES_IN_FLIGHT_PER_CONFIG = 4  # more wait their turn without holding a worker
MAX_RECORDED_FETCHES = 100  # fetch calls listed in a run's outcome

# -- fetch -------------------------------------------------------------------------------------
MAX_URL_CHARS = 8 * KIB
MAX_FETCH_METHOD_CHARS = 16
MAX_FETCH_HEADERS = 64
MAX_FETCH_HEADER_BYTES = 16 * KIB  # names and values together
MAX_FETCH_BODY_BYTES = 1 * MIB
MAX_RESPONSE_BYTES = 2 * MIB
DEFAULT_FETCH_TIMEOUT_S = 10.0
MAX_FETCH_TIMEOUT_S = 30.0  # one deadline for connect, TLS, headers and body together

# -- cache -------------------------------------------------------------------------------------
MAX_CACHE_KEY_BYTES = 1 * KIB
MAX_CACHE_VALUE_BYTES = 64 * KIB  # as JSON
MAX_CACHE_ENTRIES_PER_CONFIG = 1000  # past it, the config's least recently used entry goes
MAX_CACHE_BYTES_PER_CONFIG = 4 * MIB
MAX_CACHE_BYTES_PER_NODE = 64 * MIB  # past it, the node's least recently used entry goes
MAX_CACHE_TTL_S = 86_400.0
DEFAULT_CACHE_TTL_S = 60.0
MAX_CACHE_INT = 2**63 - 1  # incr stays a 64-bit signed integer
