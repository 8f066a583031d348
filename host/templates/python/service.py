"""{{name}}: a WASI 0.3 `wasi:http/service` component, built by componentize-py:

    componentize-py -d wit -w wasi:http/service@0.3.0 componentize app -o {{name}}.wasm

`handle` is a coroutine; the body is written by a task of its own after the response is
returned, so it streams.
"""

import componentize_py_async_support
import wit_world
from componentize_py_types import Ok
from wit_world import exports
from wit_world.imports.wasi_http_types import Fields, Request, Response


class Handler(exports.Handler):
    async def handle(self, request: Request) -> Response:
        path = request.get_path_with_query() or "/"
        body, reader = wit_world.byte_stream()
        _, trailers = wit_world.result_option_wasi_http_types_fields_wasi_http_types_error_code_future(
            lambda: Ok(None)
        )
        headers = Fields.from_list([("content-type", b"text/plain")])
        response, _ = Response.new(headers, reader, trailers)

        async def write() -> None:
            with body:
                await body.write_all(f"Hello from {{name}}! You asked for {path}\n".encode())

        componentize_py_async_support.spawn(write())
        return response
