module github.com/plughost/plughost/plugins/go/cors

go 1.24

require github.com/plughost/plughost/plugin-guest-sdk/go v0.1.0

replace github.com/plughost/plughost/plugin-guest-sdk/go => ../../../plugin-guest-sdk/go
