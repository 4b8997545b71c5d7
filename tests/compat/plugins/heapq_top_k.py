# compat: {"config": {"scores": {"a": 5, "b": 17, "c": 3, "d": 17, "e": 11}}}
import heapq


class Job:
    def __init__(self, priority, name):
        self.priority = priority
        self.name = name

    def __lt__(self, other):
        return (self.priority, self.name) < (other.priority, other.name)


def run_every_minute(meta):
    scores = meta.config["scores"]
    top = heapq.nlargest(3, scores.items(), key=lambda kv: (kv[1], kv[0]))
    queue = []
    for name, score in scores.items():
        heapq.heappush(queue, Job(-score, name))
    order = [heapq.heappop(queue).name for _ in range(len(queue))]
    merged = list(heapq.merge([1, 4, 9], [2, 3, 10]))
    return {"top": top, "order": order, "merged": merged, "smallest": heapq.nsmallest(2, scores.values())}
