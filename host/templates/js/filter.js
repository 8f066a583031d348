// {{name}}: a plughost filter. It runs on every request: it refuses those without a `host`
// header (400) and lets the others through, marking their response with `x-{{name}}`.
import { log } from 'plughost:plugin/host@0.1.0';

// Once per instance, with the plugin's config as JSON; throwing keeps it from loading.
export function pluginInit(json) {
  log('info', '{{name}} ready');
}

// Every request, in filter-chain order.
export function pluginProcess(req) {
  if (!req.headers.some((h) => h.name === 'host')) {
    return {
      tag: 'respond',
      val: { status: 400, headers: [], body: new TextEncoder().encode('a host header is required\n') },
    };
  }
  return {
    tag: 'continue',
    val: {
      setHeaders: [],
      removeHeaders: [],
      responseHeaders: [{ name: 'x-{{name}}', value: 'seen' }],
    },
  };
}
