# compat: {"config": {"url": "https://hooks.example.com/notify", "channel": "#ops"}, "allowed_hosts": ["hooks.example.com"], "fetch": {"https://hooks.example.com/notify": {"status": 201, "json": {"id": "m-1"}}}}
import json


def notify(meta, text, **fields):
    payload = {"channel": meta.config["channel"], "text": text, **fields}
    response = meta.fetch(meta.config["url"], method="POST", body=payload,
                          headers={"Content-Type": "application/json"})
    if response.status not in (200, 201):
        raise RuntimeError(f"webhook failed: {response.status}")
    return response.json()["id"]


def run_every_minute(meta):
    message_id = notify(meta, "disk almost full", severity="warning")
    meta.storage.set("last_message", message_id)
    return {"id": message_id, "sent": json.dumps({"ok": True})}
