// notes: a plughost responder written in JavaScript that keeps short notes in the `notes`
// key-value bucket (wasi:keyvalue): `PUT /notes/NAME` with a body stores it, `GET /notes/NAME`
// answers it (404 when absent). Every instance, and with a Redis bucket every plughost of a
// fleet, sees the same notes. Built against the `plugin-keyvalue` world; grant the bucket
// with `keyvalue = ["notes"]`.
import { log } from 'plughost:plugin/host@0.1.0';
import { open } from 'wasi:keyvalue/store@0.2.0-draft';

const text = (status, body) => ({
  tag: 'respond',
  val: {
    status,
    headers: [
      { name: 'content-type', value: 'text/plain; charset=utf-8' },
      { name: 'cache-control', value: 'no-store' },
    ],
    body: new TextEncoder().encode(body),
  },
});

export function pluginInit(_json) {
  open('notes');
  log('info', 'notes (js) ready');
}

export function pluginProcess(req) {
  const name = req.uri.split('?')[0].split('/').filter(Boolean).pop();
  if (!name) {
    return text(400, 'name the note: /notes/NAME\n');
  }
  const bucket = open('notes');
  if (req.method === 'PUT' || req.method === 'POST') {
    bucket.set(name, req.body);
    return text(200, `stored ${name}\n`);
  }
  const value = bucket.get(name);
  if (value === undefined) {
    return text(404, `no note ${name}\n`);
  }
  return text(200, new TextDecoder().decode(value));
}
