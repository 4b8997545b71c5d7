# compat: {"config": {"endpoint": "https://hooks.example.com/x", "retries": "3", "channels": "ops, dev", "dry_run": "true"}}
from dataclasses import dataclass, field, fields
from typing import Optional


class ConfigError(ValueError):
    def __init__(self, key, problem):
        super().__init__(f"{key}: {problem}")
        self.key = key


def parse_bool(value):
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("1", "true", "yes", "on")


@dataclass
class Settings:
    endpoint: str
    retries: int = 3
    channels: list = field(default_factory=list)
    dry_run: bool = False
    timeout: Optional[float] = None

    def __post_init__(self):
        if not self.endpoint.startswith("https://"):
            raise ConfigError("endpoint", "must be https")
        self.retries = int(self.retries)
        if not 0 <= self.retries <= 10:
            raise ConfigError("retries", "must be between 0 and 10")
        if isinstance(self.channels, str):
            self.channels = [c.strip() for c in self.channels.split(",") if c.strip()]
        self.dry_run = parse_bool(self.dry_run)


def run_every_minute(meta):
    settings = Settings(**dict(meta.config))
    try:
        Settings(endpoint="http://insecure")
    except ConfigError as exc:
        error = (exc.key, str(exc))
    return {
        "fields": [f.name for f in fields(Settings)],
        "settings": [settings.endpoint, settings.retries, settings.channels, settings.dry_run],
        "error": list(error),
    }
