# compat: {"config": {"allow": ["10.0.0.0/8", "192.168.1.0/24", "2001:db8::/32"], "clients": ["10.1.2.3", "192.168.2.1", "2001:db8::1", "8.8.8.8"]}}
import ipaddress


def run_every_minute(meta):
    networks = [ipaddress.ip_network(n) for n in meta.config["allow"]]
    verdicts = {}
    for raw in meta.config["clients"]:
        address = ipaddress.ip_address(raw)
        verdicts[raw] = any(address in net for net in networks if net.version == address.version)
    return {
        "verdicts": verdicts,
        "private": [str(a) for a in map(ipaddress.ip_address, meta.config["clients"]) if a.is_private],
        "hosts": [str(h) for h in list(ipaddress.ip_network("192.168.1.0/30").hosts())],
    }
