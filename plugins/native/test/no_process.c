/* Missing plugin_process: plughost must refuse it and start anyway. */
void plugin_init(void* context) { }
