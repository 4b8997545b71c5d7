from fractions import Fraction


def split_bill(total, shares):
    whole = sum(shares)
    return [Fraction(total) * Fraction(s, whole) for s in shares]


def run_every_minute(meta):
    parts = split_bill(100, [1, 2, 3])
    return {
        "parts": [str(p) for p in parts],
        "sum": str(sum(parts)),
        "approx": str(Fraction(3.14159).limit_denominator(100)),
        "float": float(Fraction(1, 3) + Fraction(1, 6)),
    }
