import bisect

BREAKPOINTS = [60, 70, 80, 90]
GRADES = "FDCBA"


def grade(score):
    return GRADES[bisect.bisect(BREAKPOINTS, score)]


def run_every_minute(meta):
    scores = [33, 99, 77, 70, 89, 90, 100]
    timeline = []
    for t in [5, 1, 9, 3]:
        bisect.insort(timeline, t)
    return {"grades": [grade(s) for s in scores], "timeline": timeline, "pos": bisect.bisect_left(timeline, 4)}
