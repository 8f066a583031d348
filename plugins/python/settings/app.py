"""settings: a plughost responder written in Python against the `plugin-sdk` world, using
the interfaces Spin's components use: it answers with the wasi:config value of the key named
in the `x-key` header (a key of its `config` table or a secret granted to it) and counts the
visits of each path in the `visits` bucket by compare-and-swap (wasi:keyvalue 0.2.0-draft2):
read, add one, swap, again when another instance wrote first."""

import wit_world
from componentize_py_types import Err
from wit_world.imports import types
from wit_world.imports import wasi_config_store as config
from wit_world.imports import wasi_keyvalue_atomics_0_2_0_draft2 as atomics
from wit_world.imports import wasi_keyvalue_store_0_2_0_draft2 as store

BUCKET = "visits"
TRIES = 1000


def describe(error) -> str:
    """An error of either interface as words."""
    return getattr(error, "value", None) or type(error).__name__


def count_visit(key: str) -> int:
    """One more visit of `key`, by compare-and-swap; the count after it."""
    cas = atomics.Cas.new(store.open(BUCKET), key)
    for _ in range(TRIES):
        now = cas.current()
        count = int(now.decode()) + 1 if now else 1
        try:
            atomics.swap(cas, str(count).encode())
            return count
        except Err as e:
            if not isinstance(e.value, atomics.CasError_CasFailed):
                raise Err(describe(e.value.value))
            cas = e.value.value
    raise Err(f"{key} changed under every one of {TRIES} tries")


def setting(key: str) -> str:
    try:
        value = config.get(key)
    except Err as e:
        return f"error: {describe(e.value)}"
    return "none" if value is None else f"value={value}"


class WitWorld(wit_world.WitWorld):
    def plugin_init(self, config_json: str) -> None:
        pass

    def plugin_process(self, req: types.Request) -> types.Action:
        key = next((h.value for h in req.headers if h.name.lower() == "x-key"), None)
        try:
            visits = count_visit(req.uri)
        except Err as e:
            raise Err(f"the {BUCKET} bucket failed: {describe(e.value)}")
        lines = [f"visits: {visits}"]
        if key is not None:
            lines.append(setting(key))
        headers = [
            types.Header("content-type", "text/plain; charset=utf-8"),
            types.Header("cache-control", "no-store"),
        ]
        body = ("\n".join(lines) + "\n").encode()
        return types.Action_Respond(types.Response(200, headers, body))
