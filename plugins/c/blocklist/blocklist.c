/*
 * blocklist: a plughost filter written in C. Requests whose path starts with one of the
 * prefixes in its config get 403; all others go on.
 * Config: { blocked = ["/admin", "/.env"] }   (plugin-init receives it as JSON)
 *
 * Bindings (plugin.h, plugin.c, plugin_component_type.o) are generated from plughost's wit/ by
 * wit-bindgen's C generator; see README.md for the build.
 */
#include <stdlib.h>
#include <string.h>

#include "plugin.h"

#define MAX_PREFIXES 64

static char *prefixes[MAX_PREFIXES];
static size_t prefix_count;

static void log_info(const char *text) {
    plugin_string_t message;
    plugin_string_set(&message, text);
    plughost_plugin_host_log(PLUGHOST_PLUGIN_HOST_LEVEL_INFO, &message);
}

/* Reads the strings of the JSON array after "blocked" (no escapes inside prefixes). */
static const char *parse_blocked(const char *json) {
    const char *at = strstr(json, "\"blocked\"");
    if (!at) return "config needs a \"blocked\" list of path prefixes";
    at = strchr(at, '[');
    if (!at) return "\"blocked\" must be a list";
    for (at++; *at && *at != ']'; at++) {
        if (*at != '"') continue;
        const char *end = strchr(at + 1, '"');
        if (!end) return "unterminated string in \"blocked\"";
        if (prefix_count == MAX_PREFIXES) return "too many prefixes (at most 64)";
        size_t len = (size_t)(end - at - 1);
        char *p = malloc(len + 1);
        memcpy(p, at + 1, len);
        p[len] = '\0';
        prefixes[prefix_count++] = p;
        at = end;
    }
    return prefix_count ? NULL : "\"blocked\" is empty";
}

bool exports_plugin_plugin_init(plugin_string_t *config, plugin_string_t *err) {
    char *json = malloc(config->len + 1);
    memcpy(json, config->ptr, config->len);
    json[config->len] = '\0';
    plugin_string_free(config);
    const char *problem = parse_blocked(json);
    free(json);
    if (problem) {
        plugin_string_dup(err, problem);
        return false;
    }
    log_info("blocklist (C) ready");
    return true;
}

static bool blocked(const plugin_string_t *uri) {
    for (size_t i = 0; i < prefix_count; i++) {
        size_t n = strlen(prefixes[i]);
        if (uri->len >= n && memcmp(uri->ptr, prefixes[i], n) == 0) return true;
    }
    return false;
}

static void header(plughost_plugin_types_header_t *h, const char *name, const char *value) {
    plugin_string_dup(&h->name, name);
    plugin_string_dup(&h->value, value);
}

bool exports_plugin_plugin_process(plugin_request_t *req, plugin_action_t *ret, plugin_string_t *err) {
    (void)err;
    bool deny = blocked(&req->uri);
    plugin_request_free(req);
    if (!deny) {
        ret->tag = PLUGHOST_PLUGIN_TYPES_ACTION_CONTINUE;
        memset(&ret->val.continue_, 0, sizeof ret->val.continue_);
        return true;
    }
    static const char body[] = "blocked by blocklist (C)\n";
    plughost_plugin_types_response_t *r = &ret->val.respond;
    ret->tag = PLUGHOST_PLUGIN_TYPES_ACTION_RESPOND;
    r->status = 403;
    r->headers.len = 2;
    r->headers.ptr = malloc(2 * sizeof *r->headers.ptr);
    header(&r->headers.ptr[0], "content-type", "text/plain; charset=utf-8");
    header(&r->headers.ptr[1], "cache-control", "no-store");
    r->body.len = sizeof body - 1;
    r->body.ptr = malloc(r->body.len);
    memcpy(r->body.ptr, body, r->body.len);
    return true;
}
