"""A standard wasi:http/proxy component in Python, built with componentize-py the way its HTTP
example is (`componentize-py -d WIT -w proxy componentize app`): plughost runs it unchanged
with `kind = "wasi-http"`. It reads the request body as a stream and answers with what it got.
"""

from componentize_py_types import Err, Ok
from wit_world import exports
from wit_world.imports.streams import StreamError_Closed
from wit_world.imports.types import (
    Fields,
    IncomingRequest,
    OutgoingBody,
    OutgoingResponse,
    ResponseOutparam,
)


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: IncomingRequest, response_out: ResponseOutparam) -> None:
        method = type(request.method()).__name__.removeprefix("Method_").upper()
        path = request.path_with_query() or "/"
        received = 0
        body = request.consume()
        with body.stream() as stream:
            while True:
                try:
                    received += len(stream.blocking_read(65536))
                except Err as e:
                    if isinstance(e.value, StreamError_Closed):
                        break
                    raise
        body.__exit__(None, None, None)

        response = OutgoingResponse(
            Fields.from_list([("content-type", b"text/plain; charset=utf-8")])
        )
        response.set_status_code(200)
        out = response.body()
        ResponseOutparam.set(response_out, Ok(response))
        text = f"Hello from Python! {method} {path}, {received} bytes received\n"
        with out.write() as stream:
            stream.blocking_write_and_flush(text.encode())
        OutgoingBody.finish(out, None)
