/*
 * {{name}}: a plughost filter. It runs on every request: it refuses those without a `host`
 * header (400) and lets the others through, marking their response with `x-{{name}}`.
 *
 * Memory rules of the bindings: the request belongs to the plugin (free it with
 * plugin_request_free); everything returned must be malloc'ed (plugin_string_dup does), since
 * the bindings free it once the host has copied it.
 */
#include <stdlib.h>
#include <string.h>

#include "plugin.h"

/* Once per instance, with the plugin's config as JSON; returning false with `err` set keeps
 * it from loading. */
bool exports_plugin_plugin_init(plugin_string_t *config, plugin_string_t *err) {
    (void)err;
    plugin_string_free(config);
    plugin_string_t message;
    plugin_string_set(&message, "{{name}} ready");
    plughost_plugin_host_log(PLUGHOST_PLUGIN_HOST_LEVEL_INFO, &message);
    return true;
}

static bool has_header(const plugin_request_t *req, const char *name) {
    size_t n = strlen(name);
    for (size_t i = 0; i < req->headers.len; i++) {
        const plugin_string_t *h = &req->headers.ptr[i].name;
        if (h->len == n && memcmp(h->ptr, name, n) == 0) return true;
    }
    return false;
}

static void header(plughost_plugin_types_header_t *h, const char *name, const char *value) {
    plugin_string_dup(&h->name, name);
    plugin_string_dup(&h->value, value);
}

/* Every request, in filter-chain order. */
bool exports_plugin_plugin_process(plugin_request_t *req, plugin_action_t *ret, plugin_string_t *err) {
    (void)err;
    bool has_host = has_header(req, "host");
    plugin_request_free(req);
    if (!has_host) {
        static const char body[] = "a host header is required\n";
        plughost_plugin_types_response_t *r = &ret->val.respond;
        ret->tag = PLUGHOST_PLUGIN_TYPES_ACTION_RESPOND;
        r->status = 400;
        r->headers.len = 1;
        r->headers.ptr = malloc(sizeof *r->headers.ptr);
        header(&r->headers.ptr[0], "content-type", "text/plain; charset=utf-8");
        r->body.len = sizeof body - 1;
        r->body.ptr = malloc(r->body.len);
        memcpy(r->body.ptr, body, r->body.len);
        return true;
    }
    ret->tag = PLUGHOST_PLUGIN_TYPES_ACTION_CONTINUE;
    memset(&ret->val.continue_, 0, sizeof ret->val.continue_);
    plughost_plugin_types_edits_t *e = &ret->val.continue_;
    e->response_headers.len = 1;
    e->response_headers.ptr = malloc(sizeof *e->response_headers.ptr);
    header(&e->response_headers.ptr[0], "x-{{name}}", "seen");
    return true;
}
