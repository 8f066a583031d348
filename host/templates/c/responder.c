/*
 * {{name}}: a plughost responder. It answers every request on its route with a greeting; its
 * `config` table (in plughost.toml) may set `greeting`.
 *
 * Memory rules of the bindings: the request belongs to the plugin (free it with
 * plugin_request_free); everything returned must be malloc'ed (plugin_string_dup does), since
 * the bindings free it once the host has copied it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plugin.h"

static char greeting[64] = "Hello";

/* Once per instance, with the plugin's config as JSON; returning false with `err` set keeps
 * it from loading. Reads `"greeting": "..."` (without escapes) from it. */
bool exports_plugin_plugin_init(plugin_string_t *config, plugin_string_t *err) {
    char *json = strndup((const char *)config->ptr, config->len);
    plugin_string_free(config);
    const char *at = strstr(json, "\"greeting\"");
    if (at && (at = strchr(at + 10, '"'))) {
        const char *end = strchr(at + 1, '"');
        size_t n = end ? (size_t)(end - at - 1) : 0;
        if (!end || n >= sizeof greeting) {
            free(json);
            plugin_string_dup(err, "greeting must be a string of at most 63 bytes");
            return false;
        }
        memcpy(greeting, at + 1, n);
        greeting[n] = '\0';
    }
    free(json);
    plugin_string_t message;
    plugin_string_set(&message, "{{name}} ready");
    plughost_plugin_host_log(PLUGHOST_PLUGIN_HOST_LEVEL_INFO, &message);
    return true;
}

/* Every request on the plugin's routes. */
bool exports_plugin_plugin_process(plugin_request_t *req, plugin_action_t *ret, plugin_string_t *err) {
    (void)err;
    plughost_plugin_types_response_t *r = &ret->val.respond;
    ret->tag = PLUGHOST_PLUGIN_TYPES_ACTION_RESPOND;
    r->status = 200;
    r->headers.len = 1;
    r->headers.ptr = malloc(sizeof *r->headers.ptr);
    plugin_string_dup(&r->headers.ptr[0].name, "content-type");
    plugin_string_dup(&r->headers.ptr[0].value, "text/plain; charset=utf-8");
    int n = snprintf(NULL, 0, "%s from {{name}}! You asked for %.*s\n", greeting,
                     (int)req->uri.len, (const char *)req->uri.ptr);
    r->body.ptr = malloc((size_t)n + 1);
    snprintf((char *)r->body.ptr, (size_t)n + 1, "%s from {{name}}! You asked for %.*s\n",
             greeting, (int)req->uri.len, (const char *)req->uri.ptr);
    r->body.len = (size_t)n;
    plugin_request_free(req);
    return true;
}
