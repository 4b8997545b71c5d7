# compat: {"config": {"user": "api", "password": "pa:ss"}}
import base64


def basic_auth(user, password):
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return {"Authorization": f"Basic {token}"}


def run_every_minute(meta):
    headers = basic_auth(meta.config["user"], meta.config["password"])
    token = headers["Authorization"].split()[1]
    user, _, password = base64.b64decode(token).decode().partition(":")
    return {
        "headers": headers,
        "decoded": [user, password],
        "urlsafe": base64.urlsafe_b64encode(b"\xfb\xff").decode(),
        "b32": base64.b32encode(b"hi").decode(),
    }
