void plugin_init(void* context) { }
void plugin_process(const char* data, void* context) { }
