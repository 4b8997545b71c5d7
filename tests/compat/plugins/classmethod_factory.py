# compat: {"config": {"users": [{"name": "Ann", "email": "ANN@EXAMPLE.COM"}, {"name": "Bob", "email": "bob@example.com", "admin": true}]}}
class User:
    registry = {}

    def __init__(self, name, email, admin=False):
        self.name = name
        self.email = email
        self.admin = admin
        type(self).registry[email] = self

    @classmethod
    def from_dict(cls, raw):
        return cls(raw["name"], cls.normalize(raw["email"]), bool(raw.get("admin")))

    @staticmethod
    def normalize(email):
        return email.strip().lower()

    def __eq__(self, other):
        return isinstance(other, User) and self.email == other.email

    def __hash__(self):
        return hash(self.email)


class Admin(User):
    @classmethod
    def from_dict(cls, raw):
        user = super().from_dict(raw)
        user.admin = True
        return user


def run_every_minute(meta):
    users = [User.from_dict(u) for u in meta.config["users"]]
    boss = Admin.from_dict({"name": "Cy", "email": "cy@example.com"})
    unique = {users[0], User.from_dict(meta.config["users"][0])}
    return {
        "emails": [u.email for u in users],
        "admins": [u.name for u in users + [boss] if u.admin],
        "unique": len(unique),
        "registry": sorted(User.registry),
        "kind": type(boss).__name__,
    }
