# `make` builds {{name}}.wasm (once: `pip install componentize-py==0.25.1`), against the WASI
# 0.3 WIT in wit/ (world {{world}}).
{{name}}.wasm: app.py $(wildcard wit/*.wit wit/deps/*.wit)
	componentize-py -d wit -w {{world}} componentize app -o $@
