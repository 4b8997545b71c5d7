import struct
import zlib

RECORD = struct.Struct("<IhH8s")


def pack(records):
    return b"".join(RECORD.pack(i, t, flags, name.encode().ljust(8, b"\0")) for i, t, flags, name in records)


def run_every_minute(meta):
    blob = pack([(1, -5, 3, "alpha"), (2, 12, 0, "beta")])
    compressed = zlib.compress(blob)
    back = [
        (i, t, f, raw.rstrip(b"\0").decode())
        for i, t, f, raw in RECORD.iter_unpack(zlib.decompress(compressed))
    ]
    return {"size": len(blob), "crc": zlib.crc32(blob), "back": back, "be": struct.pack(">H", 258).hex()}
