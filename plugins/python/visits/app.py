"""visits: a plughost responder written in Python that counts the visits of each path in the
`visits` key-value bucket (wasi:keyvalue atomics), so the count is shared by every instance
and, with a Redis bucket, by every plughost of a fleet. Build it against the
`plugin-keyvalue` world and grant it the bucket: `keyvalue = ["visits"]`."""

import wit_world
from componentize_py_types import Err
from wit_world.imports import atomics, host, store, types

BUCKET = "visits"


def describe(error) -> str:
    """The store's error as words."""
    return getattr(error, "value", None) or type(error).__name__


class WitWorld(wit_world.WitWorld):
    def plugin_init(self, config: str) -> None:
        try:
            store.open(BUCKET)
        except Err as e:
            raise Err(f"cannot open the {BUCKET} bucket: {describe(e.value)}")
        host.log(host.Level.INFO, "visits (python) ready")

    def plugin_process(self, req: types.Request) -> types.Action:
        try:
            count = atomics.increment(store.open(BUCKET), req.uri, 1)
        except Err as e:
            raise Err(f"the {BUCKET} bucket failed: {describe(e.value)}")
        headers = [
            types.Header("content-type", "text/plain; charset=utf-8"),
            types.Header("cache-control", "no-store"),
        ]
        body = f"{req.uri} visited {count} times\n".encode()
        return types.Action_Respond(types.Response(200, headers, body))
