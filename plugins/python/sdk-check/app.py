"""sdk-check: a filter calling every helper of plughost's Python SDK
(plugin-guest-sdk/python), for the SDK's test in tests/tests/sdk.rs. Config: { tag = "..." }"""

import wit_world
from wit_world.imports import types

import plughost_sdk as sdk

settings: dict = {}


class WitWorld(wit_world.WitWorld):
    def plugin_init(self, config: str) -> None:
        global settings
        settings = sdk.config(config)
        sdk.log("info", f"sdk-check (python) ready: {settings.get('tag', '-')}")

    def plugin_process(self, req: types.Request) -> types.Action:
        path = req.uri.split("?")[0]
        if path == "/sdk/text":
            return sdk.text(201, "plain\n", {"X-Extra": "1"})
        if path == "/sdk/json":
            return sdk.json(200, {"tag": settings.get("tag"), "probe": sdk.header(req, "X-Probe")})
        if path == "/sdk/respond":
            return sdk.respond(418, b"\x00\x01", {"Content-Type": "application/octet-stream"})
        return sdk.next(
            set_headers={"X-Set": "yes"},
            remove_headers=["X-Drop"],
            response_headers={"X-Seen": "sdk-check"},
        )
