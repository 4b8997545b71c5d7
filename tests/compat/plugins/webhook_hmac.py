# compat: {"config": {"secret": "s3cr3t", "payload": {"event": "paid", "amount": 1200}}}
import hashlib
import hmac
import json


def sign(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(secret, body, signature):
    return hmac.compare_digest(sign(secret, body), signature)


def run_every_minute(meta):
    body = json.dumps(meta.config["payload"], sort_keys=True, separators=(",", ":")).encode()
    signature = sign(meta.config["secret"], body)
    assert verify(meta.config["secret"], body, signature)
    assert not verify("wrong", body, signature)
    return {"signature": signature, "header": f"sha256={signature}", "length": len(body)}
