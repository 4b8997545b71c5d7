class Temperature:
    def __init__(self, celsius=0.0):
        self.celsius = celsius

    @property
    def celsius(self):
        return self._celsius

    @celsius.setter
    def celsius(self, value):
        if value < -273.15:
            raise ValueError("below absolute zero")
        self._celsius = float(value)

    @property
    def fahrenheit(self):
        return self._celsius * 9 / 5 + 32

    @fahrenheit.setter
    def fahrenheit(self, value):
        self.celsius = (value - 32) * 5 / 9

    def __repr__(self):
        return f"Temperature({self._celsius:.1f})"


def run_every_minute(meta):
    t = Temperature(20)
    t.fahrenheit = 212
    errors = []
    try:
        t.celsius = -300
    except ValueError as exc:
        errors.append(str(exc))
    return {"c": t.celsius, "f": t.fahrenheit, "repr": repr(t), "errors": errors}
