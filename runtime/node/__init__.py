"""One node of the fleet (`plugin-runtime serve`): a thin `Node` and its duties.

node.py       lifecycle, the loop, drain, stats
claim.py      tick: lock due tasks, decide, record claims, hand runs to the dispatcher
record.py     record finished runs in batches; never blocked by a run's data
sweep.py      recover runs of dead nodes
reload.py     act on LISTEN/NOTIFY (listener.py) and reconcile
retention.py  prune old runs and logs
dispatch.py   start held runs at their due time, bounded concurrency
gateway.py    the one way to the database; records.py the typed shapes crossing it
"""

from runtime.node.node import Node
from runtime.node.settings import DEAD_AFTER_S, NodeSettings

__all__ = ["DEAD_AFTER_S", "Node", "NodeSettings"]
