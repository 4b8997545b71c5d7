# compat: {"storage": {"state": "PENDING"}, "config": {"events": ["pay", "ship", "deliver"]}}
from enum import Enum, auto


class State(Enum):
    PENDING = auto()
    PAID = auto()
    SHIPPED = auto()
    DELIVERED = auto()
    CANCELLED = auto()


TRANSITIONS = {
    (State.PENDING, "pay"): State.PAID,
    (State.PENDING, "cancel"): State.CANCELLED,
    (State.PAID, "ship"): State.SHIPPED,
    (State.SHIPPED, "deliver"): State.DELIVERED,
}


class InvalidTransition(Exception):
    def __init__(self, state, event):
        super().__init__(f"cannot {event} from {state.name}")
        self.state = state
        self.event = event


def step(state, event):
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise InvalidTransition(state, event) from None


def run_every_minute(meta):
    state = State[meta.storage.get("state", "PENDING")]
    history = [state.name]
    for event in meta.config["events"]:
        state = step(state, event)
        history.append(state.name)
    try:
        step(state, "pay")
    except InvalidTransition as exc:
        history.append(str(exc))
    meta.storage.set("state", state.name)
    return {"history": history, "final": state.value, "members": [s.name for s in State]}
