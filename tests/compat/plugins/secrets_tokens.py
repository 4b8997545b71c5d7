import secrets
import string

ALPHABET = string.ascii_letters + string.digits


def password(n=16):
    return "".join(secrets.choice(ALPHABET) for _ in range(n))


def run_every_minute(meta):
    token = secrets.token_hex(16)
    url_token = secrets.token_urlsafe(24)
    pw = password()
    return {
        "hex_len": len(token),
        "hex_ok": all(c in "0123456789abcdef" for c in token),
        "url_ok": len(url_token) >= 24,
        "pw_len": len(pw),
        "pw_ok": set(pw) <= set(ALPHABET),
        "below": 0 <= secrets.randbelow(10) < 10,
        "same": secrets.compare_digest("abc", "abc"),
    }
