// {{name}}: a plughost responder. It answers every request on its route with a greeting; its
// `config` table (in plughost.toml) may set `greeting`.
import { log } from 'plughost:plugin/host@0.1.0';

let greeting = 'Hello';

// Once per instance, with the plugin's config as JSON; throwing keeps it from loading.
export function pluginInit(json) {
  greeting = JSON.parse(json).greeting ?? greeting;
  log('info', '{{name}} ready');
}

// Every request on the plugin's routes.
export function pluginProcess(req) {
  const body = `${greeting} from {{name}}! You asked for ${req.uri}\n`;
  return {
    tag: 'respond',
    val: {
      status: 200,
      headers: [{ name: 'content-type', value: 'text/plain; charset=utf-8' }],
      body: new TextEncoder().encode(body),
    },
  };
}
