"""describe: a plughost responder written in Python. It answers every request on its route with
JSON describing the request. Config: {"pretty": true} indents the JSON."""

import json

import wit_world
from componentize_py_types import Err
from wit_world.imports import host, types

settings = {}


class WitWorld(wit_world.WitWorld):
    def plugin_init(self, config: str) -> None:
        global settings
        try:
            settings = json.loads(config)
        except ValueError as e:
            raise Err(f"config is not JSON: {e}")
        host.log(host.Level.INFO, "describe (python) ready")

    def plugin_process(self, req: types.Request) -> types.Action:
        described = {
            "plugin": "describe (python)",
            "method": req.method,
            "uri": req.uri,
            "client": req.client,
            "headers": {h.name: h.value for h in req.headers},
            "body_bytes": len(req.body),
        }
        text = json.dumps(described, indent=2 if settings.get("pretty") else None)
        headers = [
            types.Header("content-type", "application/json"),
            types.Header("cache-control", "no-store"),
        ]
        return types.Action_Respond(types.Response(200, headers, text.encode()))
