// {{name}}: a plughost responder. It answers every request on its route with a greeting; its
// `config` table (in plughost.toml) may set `greeting`.
import * as sdk from './plughost-sdk/index.js';

let greeting = 'Hello';

// Once per instance, with the plugin's config as JSON; throwing keeps it from loading.
export function pluginInit(json) {
  greeting = sdk.config(json).greeting ?? greeting;
  sdk.log('info', '{{name}} ready');
}

// Every request on the plugin's routes.
export function pluginProcess(req) {
  return sdk.text(200, `${greeting} from {{name}}! You asked for ${req.uri}\n`);
}
